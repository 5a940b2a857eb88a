"""`reproduce --plan` GPU-hours follow the recipe's precision/compile settings and the throughputs measured in
mixflow_bench/pipeline/throughputs/, per GPU type, and say which measurement they come from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mixflow_bench.pipeline import estimate
from mixflow_bench.pipeline.reproduce import plan
from mixflow_bench.recipes.loader import load_recipe

RESULTS = Path(__file__).resolve().parents[1] / "mixflow_bench" / "pipeline" / "throughputs"
FAST = {"sample": {"precision": "bf16", "compile": True}}


def _h100(estimates: list) -> estimate.Estimate:
    """The one H100 estimate (other GPU types may have been measured since)."""
    (est,) = [e for e in estimates if estimate.short_gpu(e.gpu) == "H100"]
    return est


def _rows(case: str, path: str, kind: str = "sampling") -> list[dict]:
    """The benchmark JSON rows of one case and path, read directly."""
    rows = []
    for f in RESULTS.glob(f"h100-*/{kind}*.json"):
        rows += [r for r in json.loads(f.read_text())["rows"] if r["case"] == case and r["path"] == path]
    return [r for r in rows if r.get("compile") in (False, "default", None)]


def test_sit_xl_sde_cfg_50k_at_the_official_setting_is_the_measured_rate():
    runs = _rows("SiT-XL/2 256, SDE-250, CFG 1.5", "official")
    assert len(runs) == 2  # sampling-sit.json and sampling-sit-max-autotune.json
    official = min(r["images_per_s"] for r in runs)
    recipe = load_recipe("sit-xl-256-sde-cfg")
    assert (recipe.sample.precision, recipe.sample.compile, recipe.sample.num) == ("tf32", False, 50_000)
    est = _h100(estimate.sampling_estimates(recipe.model.name, recipe.sample))
    assert est.hours == pytest.approx(50_000 / official / 3600, rel=1e-6)  # the slower of the two runs
    assert estimate.gpu_hours_sampling(recipe.model.name, recipe.sample) == est.hours
    assert est.hours > 15 and not est.assumptions and "H100" in est.label and "sampling-sit.json" in est.basis
    # the same recipe on the fast path (bf16 + compile) uses the fast row
    (fast_row,) = _rows("SiT-XL/2 256, SDE-250, CFG 1.5", "fast")
    fast = load_recipe("sit-xl-256-sde-cfg", FAST)
    est_fast = _h100(estimate.sampling_estimates(fast.model.name, fast.sample))
    assert est_fast.hours == pytest.approx(50_000 / fast_row["images_per_s"] / 3600, rel=1e-6)


def test_rae_autoguidance_and_training_follow_the_measured_rows():
    (row,) = _rows("RAE DiT^DH-XL 256, Euler-49, AG 1.42", "official")
    rae = load_recipe("rae-256-cfg")
    est = _h100(estimate.sampling_estimates(rae.model.name, rae.sample))
    assert est.hours == pytest.approx(50_000 / row["images_per_s"] / 3600, rel=1e-6)
    (train_row,) = _rows("DiT^DH-XL 256, MixFlow gamma 0.4", "official", "train")
    t = _h100(estimate.training_estimates(rae.model.name, rae.train))
    assert t.hours == pytest.approx(rae.train.steps * rae.train.batch_size / train_row["images_per_s"] / 3600)
    # RAE trains TF32 + compile; the H100 was measured eager only, and the estimate says so
    assert t.assumptions == ("TF32 + compile not measured on this GPU: the TF32 eager rate is used",)
    assert "train.json" in t.basis
    sit = load_recipe("sit-xl-256")
    (sit_row,) = _rows("SiT-XL/2 256, MixFlow gamma 0.8", "official", "train")
    t = _h100(estimate.training_estimates(sit.model.name, sit.train))
    assert t.hours == pytest.approx(500_000 * 256 / sit_row["images_per_s"] / 3600)


def test_unmeasured_cases_are_labelled_assumptions():
    b = load_recipe("sit-b-256")  # SiT-B/2 was not benchmarked; unguided sampling was not either
    est = _h100(estimate.sampling_estimates(b.model.name, b.sample))
    assert any("SiT-B/2 not measured" in a for a in est.assumptions) and "assumed" in est.label
    assert any("unguided" in a for a in est.assumptions)
    repa = load_recipe("repa-256")  # trains in bf16 without compile: not a benchmarked path
    t = _h100(estimate.training_estimates(repa.model.name, repa.train))
    assert any("bf16 eager not measured" in a for a in t.assumptions)


def test_one_estimate_per_measured_gpu_type(tmp_path):
    shutil.copytree(RESULTS / "h100-2026-11-22", tmp_path / "h100")
    other = tmp_path / "h200"
    other.mkdir()
    data = json.loads((RESULTS / "h100-2026-11-22" / "sampling-sit.json").read_text())
    data["device"] = "NVIDIA H200"
    for r in data["rows"]:
        r["s_per_step"] /= 2
        r["decode_s"] /= 2
    (other / "sampling-sit.json").write_text(json.dumps(data))
    recipe = load_recipe("sit-xl-256-sde-cfg")
    by_gpu = {estimate.short_gpu(e.gpu): e for e in estimate.sampling_estimates("sit-xl-2", recipe.sample, tmp_path)}
    assert set(by_gpu) == {"H100", "H200"}
    assert by_gpu["H200"].hours == pytest.approx(by_gpu["H100"].hours / 2, rel=0.02)  # the H100 takes the slower run
    assert "h200/sampling-sit.json" in by_gpu["H200"].basis


def test_plan_rows_carry_the_estimate_and_its_basis(tmp_path):
    _, _, rows = plan("sit-xl-256-sde-cfg", None, tmp_path)
    stage = {s.name: s for s, _ in rows}["sample-baseline"]
    recipe = load_recipe("sit-xl-256-sde-cfg")
    assert stage.gpu_hours == pytest.approx(estimate.sampling_estimates("sit-xl-2", recipe.sample)[0].hours)
    assert "sampling-sit.json" in stage.gpu_basis and "(measured)" in stage.gpu_basis


def test_stage_hours_equal_the_measured_rates():
    """Through the functions the stages call: SiT-XL/2 SDE-250 + CFG 1.5, 50K at TF32, and RAE's training."""
    sit = load_recipe("sit-xl-256-cfg", {"sample": {"sampler": "sde", "steps": 250}})
    official = min(r["images_per_s"] for r in _rows("SiT-XL/2 256, SDE-250, CFG 1.5", "official"))
    assert estimate.gpu_hours_sampling(sit.model.name, sit.sample) == pytest.approx(50_000 / official / 3600, 1e-6)
    rae = load_recipe("rae-256")
    (row,) = _rows("DiT^DH-XL 256, MixFlow gamma 0.4", "official", "train")
    expected = rae.train.steps * rae.train.batch_size / row["images_per_s"] / 3600
    assert estimate.gpu_hours_training(rae.model.name, rae.train) == pytest.approx(expected)


def _official_file(kind: str, case: str, rows: list[dict], quick: bool = False) -> dict:
    """A bench_official.py JSON file: the official code's row and this project's exact and fast rows."""
    base = {"case": case, "kind": kind, "gpu": "NVIDIA H200", "torch": "2.11.0", "peer": "willisma/SiT@947f95bd3a51"}
    return {"benchmark": "benchmarks/bench_official.py", "kind": kind, "quick": quick, "gpu": "NVIDIA H200",
            "rows": [{**base, "status": "ok", **r} for r in rows]}  # fmt: skip


def test_bench_official_rows_give_the_exact_and_fast_estimates(tmp_path):
    shutil.copytree(RESULTS / "h100-2026-11-22", tmp_path / "h100")
    (tmp_path / "h200").mkdir()
    case = "SiT-XL/2 256, SDE-250, CFG 1.5"
    rows = [
        {"path": "official", "batch": 4, "precision": "tf32", "compile": False, "images_per_s": 0.5,
         "s_per_step": 0.031, "decode_s": 0.01},
        {"path": "fast", "batch": 256, "precision": "bf16", "compile": "default", "images_per_s": 3.9,
         "s_per_step": 0.26, "decode_s": 0.5},
        {"path": "exact", "batch": 64, "precision": "tf32", "compile": False, "images_per_s": 0.55,
         "s_per_step": 0.115, "decode_s": 0.2},
        {"path": "exact", "batch": 64, "precision": "tf32", "compile": False, "status": "deadline",
         "images_per_s": 0.01, "s_per_step": 9.0, "decode_s": 0.2},
    ]  # fmt: skip
    (tmp_path / "h200" / "official-sit-sde.json").write_text(json.dumps(_official_file("sampling", case, rows)))
    quick = _official_file("sampling", case, [{**rows[2], "s_per_step": 100.0}], quick=True)
    (tmp_path / "h200" / "official-quick.json").write_text(json.dumps(quick))
    train_rows = [
        {"path": "official", "batch": 32, "precision": "tf32", "compile": False, "images_per_s": 170.0},
        {"path": "fast", "batch": 64, "precision": "bf16", "compile": "default", "images_per_s": 600.0},
        {"path": "exact", "batch": 32, "precision": "tf32", "compile": False, "images_per_s": 180.0},
    ]  # fmt: skip
    train_file = _official_file("train", "SiT-XL/2 256, MixFlow gamma 0.8", train_rows)
    (tmp_path / "h200" / "official-train-sit.json").write_text(json.dumps(train_file))
    estimate.load_measurements.cache_clear()

    recipe = load_recipe("sit-xl-256-sde-cfg")  # tf32 eager: the exact row, not the official code's row
    by_gpu = {estimate.short_gpu(e.gpu): e for e in estimate.sampling_estimates("sit-xl-2", recipe.sample, tmp_path)}
    h200 = by_gpu["H200"]
    assert h200.hours == pytest.approx(50_000 * (250 * 0.115 + 0.2) / 64 / 3600, rel=1e-9)
    assert "official-sit-sde.json" in h200.basis and "exact" in h200.basis and not h200.assumptions
    assert "sampling-sit.json" in by_gpu["H100"].basis  # no bench_official.py file there: the older rows
    fast = load_recipe("sit-xl-256-sde-cfg", FAST)
    (h200_fast,) = [e for e in estimate.sampling_estimates("sit-xl-2", fast.sample, tmp_path) if "H200" in e.gpu]
    assert h200_fast.hours == pytest.approx(50_000 * (250 * 0.26 + 0.5) / 256 / 3600, rel=1e-9)

    sit = load_recipe("sit-xl-256")
    (t,) = [e for e in estimate.training_estimates("sit-xl-2", sit.train, tmp_path) if "H200" in e.gpu]
    assert t.hours == pytest.approx(500_000 * 256 / 180.0 / 3600)
    assert "official-train-sit.json" in t.basis


def test_bench_official_rows_are_preferred_over_older_rows_of_the_same_gpu(tmp_path):
    shutil.copytree(RESULTS / "h100-2026-11-22", tmp_path / "h100")
    old_fast = next(r for r in _rows("SiT-XL/2 256, SDE-250, CFG 1.5", "fast"))
    rows = [{"path": "fast", "batch": 256, "precision": "bf16", "compile": "default",
             "images_per_s": old_fast["images_per_s"] * 2, "s_per_step": old_fast["s_per_step"] / 2,
             "decode_s": old_fast["decode_s"]}]  # fmt: skip
    data = _official_file("sampling", "SiT-XL/2 256, SDE-250, CFG 1.5", rows)
    data["gpu"] = data["rows"][0]["gpu"] = "NVIDIA H100 80GB HBM3"
    (tmp_path / "h100" / "official-sit-sde.json").write_text(json.dumps(data))
    estimate.load_measurements.cache_clear()
    fast = load_recipe("sit-xl-256-sde-cfg", FAST)
    (est,) = estimate.sampling_estimates("sit-xl-2", fast.sample, tmp_path)
    assert "official-sit-sde.json" in est.basis  # the stable measurement, though the older one is slower
    exact = load_recipe("sit-xl-256-sde-cfg")
    (est,) = estimate.sampling_estimates("sit-xl-2", exact.sample, tmp_path)
    assert "sampling-sit.json" in est.basis  # no exact row in the new file: the older exact-settings row


def test_compiled_tf32_training_uses_its_own_row_or_says_it_does_not(tmp_path):
    """RAE trains TF32 + compile (as the official train.py): that row when measured, else the eager row, said."""
    (tmp_path / "h200").mkdir()
    case = "DiT^DH-XL 256, MixFlow gamma 0.4"
    eager = {"path": "exact", "batch": 32, "precision": "tf32", "compile": False, "images_per_s": 90.0}
    compiled = {"path": "exact", "batch": 32, "precision": "tf32", "compile": "default", "images_per_s": 150.0}
    file = tmp_path / "h200" / "official-train-rae.json"
    file.write_text(json.dumps(_official_file("train", case, [eager])))
    estimate.load_measurements.cache_clear()
    rae = load_recipe("rae-256")
    assert (rae.train.precision, rae.train.compile) == ("fp32", True)
    images = rae.train.steps * rae.train.batch_size
    (t,) = estimate.training_estimates("rae-dith-xl-256", rae.train, tmp_path)
    assert t.hours == pytest.approx(images / 90.0 / 3600)
    assert any("TF32 + compile not measured" in a for a in t.assumptions)
    file.write_text(json.dumps(_official_file("train", case, [eager, compiled])))
    estimate.load_measurements.cache_clear()
    (t,) = estimate.training_estimates("rae-dith-xl-256", rae.train, tmp_path)
    assert t.hours == pytest.approx(images / 150.0 / 3600) and not t.assumptions
    eager_recipe = load_recipe("rae-256", {"train": {"compile": False}})
    (t,) = estimate.training_estimates("rae-dith-xl-256", eager_recipe.train, tmp_path)
    assert t.hours == pytest.approx(images / 90.0 / 3600) and not t.assumptions
    estimate.load_measurements.cache_clear()


def test_fp8_sampling_uses_the_fast_fp8_row_or_says_it_uses_bf16(tmp_path):
    """``--fast --fp8`` (precision fp8 + compile) reads bench_official.py --fp8's fast-fp8 row where measured."""
    (tmp_path / "h200").mkdir()
    case = "SiT-XL/2 256, SDE-250, CFG 1.5"
    fast = {"path": "fast", "batch": 256, "precision": "bf16", "compile": "default", "images_per_s": 3.9,
            "s_per_step": 0.26, "decode_s": 0.5}  # fmt: skip
    fp8 = {**fast, "path": "fast-fp8", "precision": "fp8", "images_per_s": 4.1, "s_per_step": 0.245}
    file = tmp_path / "h200" / "official-sit-sde.json"
    file.write_text(json.dumps(_official_file("sampling", case, [fast])))
    estimate.load_measurements.cache_clear()
    recipe = load_recipe("sit-xl-256-sde-cfg", {"sample": {"precision": "fp8", "compile": True}})
    (est,) = estimate.sampling_estimates("sit-xl-2", recipe.sample, tmp_path)
    assert est.hours == pytest.approx(50_000 * (250 * 0.26 + 0.5) / 256 / 3600, rel=1e-9)
    assert est.assumptions == ("fp8 + compile not measured on this GPU: the bf16 + compile rate is used",)
    file.write_text(json.dumps(_official_file("sampling", case, [fast, fp8])))
    estimate.load_measurements.cache_clear()
    (est,) = estimate.sampling_estimates("sit-xl-2", recipe.sample, tmp_path)
    assert est.hours == pytest.approx(50_000 * (250 * 0.245 + 0.5) / 256 / 3600, rel=1e-9) and not est.assumptions
    estimate.load_measurements.cache_clear()


def test_the_newest_bench_official_run_is_used(tmp_path):
    """A later run measures the current code: its rate is used even where an older run of the same case was slower
    (the older one predates a speed-up); within one run the slowest row."""
    (tmp_path / "h200").mkdir()
    case = "RAE DiT^DH-XL 256, Euler-49, AG 1.42"

    def fast(images_per_s: float, s_per_step: float) -> dict:
        return {"path": "fast", "batch": 256, "precision": "bf16", "compile": "default",
                "images_per_s": images_per_s, "s_per_step": s_per_step, "decode_s": 0.15}  # fmt: skip

    for name, date, row in (("official-rae-ag-old.json", "2026-12-01T11:38:43Z", fast(19.0, 0.272)),
                            ("official-rae-ag.json", "2026-12-02T01:20:00Z", fast(21.2, 0.243))):  # fmt: skip
        data = _official_file("sampling", case, [row])
        data["date_utc"] = date
        (tmp_path / "h200" / name).write_text(json.dumps(data))
    estimate.load_measurements.cache_clear()
    rae = load_recipe("rae-256-cfg", FAST)
    (est,) = estimate.sampling_estimates("rae-dith-xl-256", rae.sample, tmp_path)
    assert "official-rae-ag.json" in est.basis and "0.243 s/step" in est.basis
    estimate.load_measurements.cache_clear()
