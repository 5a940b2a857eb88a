"""Every reported and produced number carries its protocol; the table compares only like with like; the paper
recipes produce the reported rows with the reported protocol, and the equal-length flow-matching control."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from mixflow_bench.pipeline.stages import (
    CONTROLS,
    TIME_LAW_CONTROL,
    build_stages,
    method_and_variant,
    result_settings,
    variants,
    write_results,
)
from mixflow_bench.recipes.loader import list_recipes, load_recipe
from mixflow_bench.recipes.validate import RecipeError
from mixflow_bench.results.protocol import FIELDS, GUIDED_FIELDS, OPTIONAL_FIELDS, UNKNOWN, compare, protocol_of
from mixflow_bench.results.records import load_records, make_record
from mixflow_bench.results.reported import DEFAULT_REPORTED, ReportedError, load_reported, parse_reported
from mixflow_bench.results.table import build_table, to_markdown

# Reported rows no recipe can produce: REPA's with-CFG table row does not give its guidance scale.
NOT_PRODUCIBLE = {"repa-256-sde-cfg"}


def test_every_reported_number_states_its_protocol_field_by_field():
    raw = yaml.safe_load(DEFAULT_REPORTED.read_text())
    for entry, raw_entry in zip(load_reported(), raw["entries"]):
        needed = [f for f in FIELDS if entry.guidance != "none" or f not in GUIDED_FIELDS]
        assert [f for f in entry.protocol if f in FIELDS] == needed, entry.key
        assert set(entry.protocol) - set(FIELDS) <= set(OPTIONAL_FIELDS), entry.key
        assert raw_entry["protocol"], entry.key  # in the YAML itself, not only in comments
    by_key = {e.join_key: e.protocol for e in load_reported()}
    # the MixFlow main table: Heun 250, CFG 1.5 (mixflow.md §3.2), the rest unstated
    main = by_key[("sit-xl-256-cfg", "fm", "released", "cfg")]
    assert (main["sampler"], main["steps"], main["scale"]) == ("heun", 250, 1.5)
    assert main["nfe"] == main["interval"] == main["channels"] == main["num_samples"] == UNKNOWN
    # the baselines' own protocols (baselines.md §1.3-1.4, §2.3-2.4, §3.4-3.5)
    assert by_key[("sit-xl-256-sde-cfg", "fm", "released", "cfg")] | {} == {
        "sampler": "sde", "steps": 250, "nfe": 250, "guidance": "cfg", "scale": 1.5, "channels": 3,
        "interval": "none", "num_samples": 50000, "evaluator": "adm"}  # fmt: skip
    repa = by_key[("repa-256-sde-cfg-interval", "fm", "released", "cfg")]
    assert (repa["scale"], repa["channels"], repa["interval"]) == (1.8, "all", [0.0, 0.7])
    assert by_key[("repa-256-sde-cfg", "fm", "released", "cfg")]["scale"] == UNKNOWN
    rae = by_key[("rae-256-cfg", "fm", "released", "autoguidance")]
    assert (rae["sampler"], rae["steps"], rae["nfe"], rae["scale"]) == ("rae-euler", 50, 49, 1.42)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.pop("protocol"), "protocol is missing"),
        (lambda e: e["protocol"].pop("nfe"), "lacks \\['nfe'\\]"),
        (lambda e: e["protocol"].update(sampler="rk4"), "protocol.sampler"),
        (lambda e: e["protocol"].update(steps="many"), "protocol.steps"),
        (lambda e: e["protocol"].update(guidance="cfg"), "differs from the entry's guidance"),
    ],
)
def test_a_protocol_that_does_not_validate_is_named(mutate, message):
    data = copy.deepcopy(yaml.safe_load(DEFAULT_REPORTED.read_text()))
    entry = data["entries"][0]
    entry["protocol"] = dict(entry["protocol"])
    mutate(entry)
    with pytest.raises(ReportedError, match=message) as info:
        parse_reported(data, "reported.yaml")
    assert f"entry {entry['key']}" in str(info.value)


def _reported(protocol):
    prov = {"paper": "P", "arxiv": "0", "where": "T1", "setting": "s", "sampler": "s", "source": "primary",
            "verified": False}  # fmt: skip
    return parse_reported({"schema": "mixflow-bench/reported/v1", "entries": [
        {"key": "k", "experiment": "exp", "method": "baseline", "guidance": "cfg", "metrics": {"fid": 2.0},
         "provenance": prov, "protocol": protocol}]})  # fmt: skip


HEUN = {"sampler": "heun", "steps": 250, "nfe": "unknown", "scale": 1.5, "channels": "unknown",
        "interval": "unknown", "num_samples": 50000, "evaluator": "adm"}  # fmt: skip
SDE_SAMPLE = {"sampler": "sde", "steps": 250, "num": 50000,
              "guidance": {"kind": "cfg", "scale": 1.5, "channels": 3, "interval": None}}  # fmt: skip
HEUN_SAMPLE = {**SDE_SAMPLE, "sampler": "heun"}
ADM = ["fid", "sfid", "is", "prec", "rec"]


def _record(sample, fid, created):
    rec = make_record("reproduce", {"fid": fid}, name=f"r{fid}", experiment="exp", method="baseline", guidance="cfg",
                      num_samples=sample["num"], protocol=protocol_of(sample, ADM))  # fmt: skip
    return rec | {"created": created}


def test_table_compares_like_with_like_and_shows_the_mismatch():
    # an SDE number is never set beside a Heun number, even when it is the only one
    table = build_table([_record(SDE_SAMPLE, 2.06, "2025-01-01")], _reported(HEUN))
    reported_row, mismatch = table.comparison
    assert reported_row.status == "unproduced" and reported_row.produced == {} and reported_row.delta("fid") is None
    assert mismatch.status == "mismatch" and mismatch.produced == {"fid": 2.06} and mismatch.delta("fid") is None
    assert "sampler sde (paper heun)" in mismatch.note and mismatch.protocol["sampler"] == "sde"
    md = to_markdown(table)
    assert "produced: sde-250 (250 NFE), cfg 1.5 on 3 ch" in md and "sampler sde (paper heun)" in md

    # the same protocol joins (fields the paper leaves unknown are listed, not counted), a newer other-protocol
    # record still shows beneath it
    both = [_record(HEUN_SAMPLE, 2.20, "2025-01-02"), _record(SDE_SAMPLE, 2.06, "2025-01-03")]
    matched, mismatch = build_table(both, _reported(HEUN)).comparison
    assert matched.status == "match" and matched.delta("fid") == pytest.approx(0.20)
    assert "paper does not state: nfe, channels, interval" in matched.note
    assert mismatch.status == "mismatch" and mismatch.produced == {"fid": 2.06}

    # another sample count or scale is a mismatch too; a record without a protocol cannot be compared
    fewer = _record({**HEUN_SAMPLE, "num": 10_000}, 2.5, "2025-01-04")
    assert "num_samples 10000 (paper 50000)" in build_table([fewer], _reported(HEUN)).comparison[1].note
    bare = make_record("eval", {"fid": 2.0}, name="bare", experiment="exp", method="baseline", guidance="cfg")
    row = build_table([bare], _reported(HEUN)).comparison[1]
    assert row.status == "mismatch" and "sampler unknown (paper heun)" in row.note


def test_paper_recipes_reproduce_their_reported_rows_with_the_reported_protocol():
    names = set(list_recipes())
    for entry in load_reported():
        if entry.experiment in NOT_PRODUCIBLE:
            assert entry.experiment not in names, f"{entry.experiment} cannot be produced: its protocol is unknown"
            continue
        assert entry.experiment in names, f"no recipe produces {entry.key}"
        recipe = load_recipe(entry.experiment)
        produced = protocol_of(recipe.sample, recipe.eval.metrics, recipe.model.name, dataclasses.asdict(recipe.eval))
        differs, _ = compare(produced, entry.protocol)
        if entry.protocol["evaluator"] == "torchmetrics-train":
            # the κ-FC recipes evaluate ADM-exact by default (a row of its own in the table); with the overrides
            # their notes give, they run the paper's protocol field for field (reference size and solver included)
            assert differs == ["evaluator adm (paper torchmetrics-train)", "quantize round (paper truncate)"], differs
            paper = {"eval": {"evaluator": "torchmetrics"}, "sample": {"quantize": "truncate"}}
            recipe = load_recipe(entry.experiment, paper)
            produced = protocol_of(recipe.sample, recipe.eval.metrics, recipe.model.name,
                                   dataclasses.asdict(recipe.eval))  # fmt: skip
            differs, _ = compare(produced, entry.protocol)
        if entry.protocol.get("spectral"):
            # GM-SDE 2 with spectral sampling (Table 2, Table 4 A0) is not implemented: those rows never get a Δ
            assert differs == ["spectral false (paper true)"], differs
            continue
        assert not differs, f"recipe {recipe.name} does not use the protocol of {entry.key}: {differs}"
        methods = variants(recipe, Path("runs") / recipe.name)
        produced = {method_and_variant(recipe, name) for name in methods}
        assert (entry.method, entry.variant) in produced, (entry.key, sorted(produced))
        if "fid_gain" in entry.metrics:  # the gain needs the baseline of the same run
            assert "baseline" in methods


@pytest.mark.parametrize("name", ["sit-b-256", "sit-xl-256-cfg", "repa-256-cfg", "rae-256-cfg"])
@pytest.mark.parametrize("control_name", CONTROLS)
def test_paper_recipes_post_train_equal_length_flow_matching_controls(name, control_name, tmp_path):
    recipe = load_recipe(name)
    stages = {s.name: s for s in build_stages(recipe, tmp_path, name, {})}
    main, control = stages["train"], stages[f"train-{control_name}"]
    assert control.inputs == main.inputs  # the same initial checkpoint
    differing = {k for k in main.settings["train"] if main.settings["train"][k] != control.settings["train"][k]}
    assert differing == {"objective"}  # same steps, lr, batch, EMA, seed, precision
    objective, trained_objective = control.settings["train"]["objective"], main.settings["train"]["objective"]
    assert (objective["kind"], trained_objective["kind"]) == ("fm", "mixflow")
    if control_name == TIME_LAW_CONTROL:  # MixFlow's own time law (and shift), without the slowing
        assert (objective["t_dist"], objective["time_shift"]) == ("beta21", trained_objective["time_shift"])
    else:
        assert objective["t_dist"] != "beta21"  # the base model's own time law
    # the task trains exactly that: the recipe with only its objective replaced
    task = control.tasks[0]
    trained = load_recipe(task.args["recipe"], task.args["overrides"])
    assert result_settings("train", dataclasses.asdict(trained.train)) == control.settings["train"]
    assert task.args["out_dir"] != main.tasks[0].args["out_dir"]
    sampled = {s.settings["variant"]: s for n, s in stages.items() if n.startswith("sample-")}
    assert set(sampled) == {"baseline", "mixflow", *CONTROLS}
    assert sampled[control_name].settings["sample"] == sampled["mixflow"].settings["sample"]
    assert sampled[control_name].inputs["checkpoint"] == control.outputs[0]
    assert f"{control_name}.json" in [p.name for p in stages["eval"].outputs]


@pytest.mark.parametrize("name", ["sit-b-256-ablate-tU-mU", "sit-b-256-ablate-tB-m0t-cfg", "repa-256-sde"])
def test_ablation_and_protocol_recipes_train_no_controls(name, tmp_path):
    stages = [s.name for s in build_stages(load_recipe(name), tmp_path, name, {})]
    assert not [s for s in stages if any(c in s for c in CONTROLS)]


def test_time_law_control_must_draw_the_post_training_times(tmp_path):
    with pytest.raises(RecipeError, match="time_law_control: draws times as the post-training does"):
        load_recipe("sit-b-256", {"time_law_control": {"t_dist": "uniform"}})
    with pytest.raises(RecipeError, match="kind: fm"):
        load_recipe("sit-b-256", {"time_law_control": {"kind": "mixflow"}})


def test_produced_records_carry_the_protocol_and_the_gain(tmp_path):
    recipe = load_recipe("sit-b-256-steps50")
    evals = {}
    for variant, fid in {"baseline": 20.0, "mixflow": 17.5, "fm-control": 19.0, "fm-beta": 17.0}.items():
        evals[variant] = tmp_path / "eval" / f"{variant}.json"
        evals[variant].parent.mkdir(exist_ok=True)
        evals[variant].write_text(json.dumps({"fid": fid}))
    write_results(recipe, tmp_path, evals)
    records = {r["name"].removeprefix(f"{recipe.name}-"): r for r in load_records(tmp_path / "results")}
    # the table's method is the method; the variant is the model's place in the run
    assert {k: (r["method"], r["variant"]) for k, r in records.items()} == {
        "baseline": ("fm", "released"), "mixflow": ("mixflow", "post-trained"), "fm-control": ("fm", "control"),
        "fm-beta": ("fm", "time-law-control")}  # fmt: skip
    expected = {"sampler": "heun", "steps": 50, "nfe": 100, "guidance": "none", "num_samples": 50000,
                "evaluator": "adm", "quantize": "round"}  # fmt: skip
    assert records["baseline"]["protocol"] == records["mixflow"]["protocol"] == expected
    assert records["mixflow"]["metrics"]["fid_gain"] == pytest.approx(2.5)
    # the MixFlow row's gain over each control: over the uniform-time control, and over the time-law control alone
    assert records["mixflow"]["metrics"]["fid_gain_vs_fm-control"] == pytest.approx(1.5)
    assert records["mixflow"]["metrics"]["fid_gain_vs_fm-beta"] == pytest.approx(-0.5)
    assert "fid_gain_vs_fm-beta" not in records["fm-control"]["metrics"]
    row = next(r for r in build_table(list(records.values()), load_reported()).comparison
               if r.experiment == "sit-b-256-steps50")  # fmt: skip
    assert row.status == "match" and row.delta("fid_gain") == pytest.approx(2.5 - 2.34)


@pytest.mark.parametrize(
    ("model", "family_heun"),
    [("repa-sit-xl-2", "repa"), ("sit-xl-2", "sit"), ("rae-dith-xl-256", "rae"), (None, "generic")],
)
def test_heun_nfe_is_the_count_of_network_calls_the_families_heun_makes(model, family_heun):
    """The protocol's (and the --plan estimate's) Heun NFE equals the calls the family's Heun really makes:
    REPA's ends on an Euler step (2N - 1), the torchdiffeq-style Heun of SiT, RAE and toy models does not (2N)."""
    import torch

    from mixflow_bench.flow.samplers import heun, repa_heun
    from mixflow_bench.pipeline.estimate import sampling_nfe
    from mixflow_bench.results.protocol import sampler_nfe

    calls = []

    def velocity(x, t):
        calls.append(1)
        return -x

    steps = 7
    grid = torch.linspace(1.0, 0.0, steps + 1)
    (repa_heun if family_heun == "repa" else heun)(velocity, torch.ones(2, 3), grid)
    sample = dataclasses.make_dataclass("S", [("sampler", str), ("steps", int)])("heun", steps)
    assert sampler_nfe("heun", steps, model) == len(calls)
    assert sampling_nfe(sample, model) == len(calls)
    assert protocol_of({"sampler": "heun", "steps": steps, "num": 8, "guidance": {"kind": "none"}}, None, model)[
        "nfe"
    ] == len(calls)


def _reported_none(protocol: dict, key: str = "k") -> list:
    prov = {"paper": "P", "arxiv": "0", "where": "T1", "setting": "s", "sampler": "s", "source": "primary",
            "verified": False}  # fmt: skip
    return parse_reported({"schema": "mixflow-bench/reported/v1", "entries": [
        {"key": key, "experiment": "exp", "method": "baseline", "guidance": "none", "metrics": {"fid": 2.0},
         "provenance": prov, "protocol": {"guidance": "none", **protocol}}]})  # fmt: skip


BASE = {"sampler": "euler", "steps": 10, "nfe": 10, "num_samples": 10000, "evaluator": "torchmetrics-train"}


@pytest.mark.parametrize(
    ("reported", "produced", "why"),
    [
        ({**BASE, "sampler": "gm-sde2", "spectral": True}, {**BASE, "sampler": "gm-sde2", "spectral": False},
         "spectral false (paper true)"),
        ({**BASE, "reference_size": 10000}, {**BASE, "reference_size": "all"}, "reference_size all (paper 10000)"),
        ({**BASE, "reference_size": 10000}, BASE, "reference_size unknown (paper 10000)"),
        ({**BASE, "sampler": "rk45-scipy", "implementation": "scipy-rk45"},
         {**BASE, "sampler": "rk45", "implementation": "torchdiffeq-dopri5"}, "implementation torchdiffeq-dopri5"),
        ({**BASE, "quantize": "truncate"}, {**BASE, "quantize": "round"}, "quantize round (paper truncate)"),
    ],
)
def test_table_never_sets_spectral_reference_size_solver_or_quantisation_pairs_side_by_side(reported, produced, why):
    """A spectral GM-SDE 2 number, a FID against the first 10K vs every image, scipy's RK45 vs torchdiffeq's dopri5,
    rounded vs truncated samples: never one row with a Δ; the same protocol does join (the test can fail)."""
    rec = make_record("eval", {"fid": 2.5}, name="r", experiment="exp", method="baseline", guidance="none",
                      num_samples=10000, protocol={"guidance": "none", **produced})  # fmt: skip
    rows = build_table([rec], _reported_none(reported)).comparison
    assert all(r.delta("fid") is None for r in rows)
    assert rows[1].status == "mismatch" and why in rows[1].note
    same = make_record("eval", {"fid": 2.5}, name="s", experiment="exp", method="baseline", guidance="none",
                       num_samples=10000, protocol={"guidance": "none", **reported})  # fmt: skip
    (row,) = build_table([same], _reported_none(reported)).comparison
    assert row.status == "match" and row.delta("fid") == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("spectral", "yes"), ("reference_size", 0), ("quantize", "floor"), ("implementation", "")],
)
def test_a_bad_optional_protocol_field_is_named(field, value):
    with pytest.raises(ReportedError, match=f"protocol.{field}"):
        _reported_none({**BASE, field: value})


def test_produced_protocols_state_spectral_solver_reference_and_quantisation():
    def produced(name: str, **overrides) -> dict:
        recipe = load_recipe(name, overrides)
        return protocol_of(recipe.sample, recipe.eval.metrics, recipe.model.name, dataclasses.asdict(recipe.eval))

    assert produced("gmflow-256-sde2-nfe8")["spectral"] is False and "spectral" not in produced("gmflow-256")
    rk45 = produced("mixed-source-cifar10-rk45")
    assert (rk45["sampler"], rk45["implementation"], rk45["reference_size"]) == ("rk45-scipy", "scipy-rk45", 50000)
    assert produced("mixed-source-cifar10-rk45", sample={"sampler": "rk45"})["implementation"] == "torchdiffeq-dopri5"
    assert produced("mixed-source-ffhq-64-euler4", eval={"reference_data": {"limit": None}})["reference_size"] == "all"
    assert produced("mixed-source-ffhq-64-euler4", sample={"quantize": "truncate"})["quantize"] == "truncate"
