"""results/reported.yaml validates, carries provenance everywhere, and holds the papers' numbers."""

from __future__ import annotations

import copy

import pytest
import yaml

from mixflow_bench.results.reported import DEFAULT_REPORTED, ReportedError, load_reported, parse_reported


def test_reported_file_validates_with_provenance():
    entries = load_reported()
    assert len(entries) >= 40
    for e in entries:
        p = e.provenance
        assert p["paper"] and p["arxiv"] and p["where"] and p["setting"] and p["sampler"], e.key
        assert p["source"] in ("primary", "secondary"), e.key
        if p["source"] == "secondary":  # the MixFlow paper note's tables are not verified (mixflow.md §0)
            assert p["verified"] is False, e.key
        if p["verified"]:
            assert p["verified_by"], e.key


def test_abstract_rows_say_their_protocol_is_secondary():
    """The abstract gives RAE + MixFlow's FIDs only; sampler, steps and NFE come from the paper note."""
    abstract = [e for e in load_reported() if e.key.startswith("mixflow-rae-")]
    assert len(abstract) == 4
    for e in abstract:
        assert e.provenance["source"] == "primary" and e.provenance["protocol_source"] == "secondary", e.key
        assert "unverified" in e.provenance["sampler"], e.key


# Independent transcription of the reference notes (mixflow.md §3, baselines.md §1.4/§2.4/§3.5).
EXPECTED = {
    ("sit-b-256", "fm", "released", "none"): {"fid": 17.97},
    ("sit-b-256-cfg", "mixflow", "post-trained", "cfg"): {"fid": 3.91},
    ("sit-xl-256", "mixflow", "post-trained", "none"): {"fid": 7.87},
    ("sit-xl-512-cfg", "fm", "released", "cfg"): {"fid": 2.71},
    ("repa-256-cfg", "mixflow", "post-trained", "cfg"): {"fid": 1.59},
    ("rae-256", "mixflow", "post-trained", "none"): {"fid": 1.43},
    ("rae-256-cfg", "fm", "released", "autoguidance"): {"fid": 1.13, "is": 262.6, "precision": 0.78, "recall": 0.67},
    ("rae-512", "mixflow", "post-trained", "none"): {"fid": 1.55},
    ("rae-512-cfg", "mixflow", "post-trained", "autoguidance"): {"fid": 1.10},
    ("sit-xl-256-sde-cfg", "fm", "released", "cfg"): {"fid": 2.06, "sfid": 4.50, "is": 270.3, "precision": 0.82,
                                                 "recall": 0.59},
    ("sit-xl-256-sde", "fm", "released", "none"): {"fid": 8.3},
    ("sit-xl-512-sde-cfg", "fm", "released", "cfg"): {"fid": 2.62, "is": 252.21},
    ("repa-256-sde", "fm", "released", "none"): {"fid": 5.9},
    ("repa-256-sde-cfg-interval", "fm", "released", "cfg"): {"fid": 1.42, "sfid": 4.70, "is": 305.7,
                                                           "precision": 0.80, "recall": 0.65},
    ("sit-b-256-steps20", "mixflow", "post-trained", "none"): {"fid_gain": 2.58},
    ("sit-b-256-ablate-tB-m0t-cfg", "mixflow", "post-trained", "cfg"): {"fid": 3.93},
    ("sit-b-256", "fm", "control", "none"): {"fid": 17.96},
}


def test_reported_numbers_match_reference_notes():
    by_key = {e.join_key: e for e in load_reported()}
    for key, metrics in EXPECTED.items():
        assert by_key[key].metrics == metrics, key
    # unknowns are omitted: the RAE 512 no-guidance baseline is not reported anywhere
    assert ("rae-512", "fm", "released", "none") not in by_key


def _raw():
    return yaml.safe_load(DEFAULT_REPORTED.read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.update(method="mixflw"), "method 'mixflw'"),
        (lambda e: e["metrics"].update(fid="low"), "metric 'fid' must be a number"),
        (lambda e: e["metrics"].update(precision=82), "outside"),
        (lambda e: e["metrics"].update(kid=1.0), "unknown metric 'kid'"),
        (lambda e: e.pop("provenance"), "provenance is missing"),
        (lambda e: e.update(provenance={**e["provenance"], "verified": True, "verified_by": None}), "verified_by"),
        (lambda e: e.update(provenance={k: v for k, v in e["provenance"].items() if k != "arxiv"}), "arxiv"),
    ],
)
def test_bad_entries_are_named(mutate, message):
    data = copy.deepcopy(_raw())
    mutate(data["entries"][2])
    key = data["entries"][2]["key"]
    with pytest.raises(ReportedError, match=message) as info:
        parse_reported(data, "reported.yaml")
    assert f"entry {key}" in str(info.value)


def test_duplicate_join_key_rejected():
    data = copy.deepcopy(_raw())
    dup = copy.deepcopy(data["entries"][0])
    dup["key"] = "another-key"
    data["entries"].append(dup)
    with pytest.raises(ReportedError, match="another-key.*already used"):
        parse_reported(data, "reported.yaml")


def test_missing_file_named(tmp_path):
    with pytest.raises(ReportedError, match="no such"):
        load_reported(tmp_path / "nope.yaml")
