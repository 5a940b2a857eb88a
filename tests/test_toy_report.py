"""Every sentence of the generated write-up (results/README.md's study sections) is checked against the JSON it
comes from: each number is recomputed here from the study's summary with numpy, and each comparison word
(better / worse, further / closer) against the recomputed numbers. A sentence no check recognises fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mixflow_bench.toy.report import EXPLANATION, study_report_markdown, study_sentences

RESULTS = Path(__file__).resolve().parents[1] / "results"
STUDIES = sorted((RESULTS / "studies").glob("*/study.json"))
CONTROL_WORDS = {"the uniform-time FM control": "fm-control", "the time-law control fm-beta": "fm-beta",
                 "flow matching with uniform times (fm-control)": "fm-control"}  # fmt: skip
RATIO = re.compile(
    r"(better|worse) than (the uniform-time FM control|the time-law control fm-beta|flow matching with uniform "
    r"times \(fm-control\)) at (every step count|(\d+) of (\d+) step counts) \(FD ratio ([\d.]+)–([\d.]+)\)"
)
PERCENT = re.compile(r"(?:(\d+)–(\d+)% (worse|better) than|between (\d+)% better and (\d+)% worse than)")


def fd(r: dict, method: str) -> np.ndarray:
    return np.array([r["summary"][method][str(s)]["fd"]["mean"] for s in r["eval_steps"]])


def check_ratio_phrase(match: re.Match, ratios: np.ndarray) -> None:
    word, _, scope, k, n, lo, hi = match.groups()
    assert (float(lo), float(hi)) == (round(ratios.min(), 2), round(ratios.max(), 2)), (match.group(0), ratios)
    better = int((ratios < 1).sum())
    if scope == "every step count":
        assert better == (len(ratios) if word == "better" else 0), match.group(0)
    else:
        assert word == "better" and (int(k), int(n)) == (better, len(ratios)) and 0 < better < len(ratios)


def check_percent(text: str, ratios: np.ndarray) -> None:
    m = PERCENT.search(text)
    assert m, text
    pct = 100 * (ratios - 1)
    if m.group(3) == "worse":
        assert pct.min() >= 0 and (int(m.group(1)), int(m.group(2))) == (round(pct.min()), round(pct.max()))
    elif m.group(3) == "better":
        assert pct.max() <= 0 and (int(m.group(1)), int(m.group(2))) == (round(-pct.max()), round(-pct.min()))
    else:
        assert pct.min() < 0 < pct.max()
        assert (int(m.group(4)), int(m.group(5))) == (round(-pct.min()), round(pct.max()))


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def check_time_law(s: str, r: dict) -> None:
    check_ratio_phrase(RATIO.search(s), fd(r, "fm-beta") / fd(r, "fm-control"))


def check_mixflow(s: str, r: dict) -> None:
    g = re.match(r"MixFlow γ = ([\d.]+) is", s).group(1)
    arm = f"mixflow-g{g}"
    found = list(RATIO.finditer(s))
    assert [CONTROL_WORDS[m.group(2)] for m in found] == [c for c in ("fm-control", "fm-beta") if c in r["summary"]]
    for m in found:
        check_ratio_phrase(m, fd(r, arm) / fd(r, CONTROL_WORDS[m.group(2)]))
    exact = f"exact MixFlow-optimal g{g}"
    if exact in r["summary"]:
        tail = s[s.index("its FD is") :]
        check_percent(tail, fd(r, arm) / fd(r, exact))
        ref = 16 if 16 in r["eval_steps"] else r["eval_steps"][-1]
        a, b = numbers(tail.split("(")[1])[:2]
        assert np.isclose(a, r["summary"][arm][str(ref)]["fd"]["mean"], rtol=5e-4)
        assert np.isclose(b, r["summary"][exact][str(ref)]["fd"]["mean"], rtol=5e-4)


def check_fm_optimum(s: str, r: dict) -> None:
    check_percent(s, fd(r, "fm-control") / fd(r, "exact FM-optimal"))
    ref = 16 if 16 in r["eval_steps"] else r["eval_steps"][-1]
    a, b = numbers(s.split("(")[1])[:2]
    assert np.isclose(a, r["summary"]["fm-control"][str(ref)]["fd"]["mean"], rtol=5e-4)
    assert np.isclose(b, r["summary"]["exact FM-optimal"][str(ref)]["fd"]["mean"], rtol=5e-4)
    assert np.isclose(numbers(s)[-1], r["data_fd_floor"], rtol=5e-4)


def check_noise_level(s: str, r: dict) -> None:
    info = r["noise_level"]

    def span(key: str) -> tuple[int, int]:
        v = [100 * x for x, t in zip(info[key]["spread_mean"], info[key]["t"]) if t >= 0.5]
        return round(min(v)), round(max(v))

    assert f"over [0, 1] {span('uniform')[0]}–{span('uniform')[1]}%" in s
    for key in (k for k in info if k.startswith("mixflow-g")):
        lo, hi = span(key)
        assert f"γ = {key.split('-g')[-1]} {lo}–{hi}%" in s, key


def check_slow_flow_move(s: str, r: dict) -> None:
    sf = r["slow_flow"]
    i = int(np.argmin(np.abs(np.array(sf["t"]) - 0.875)))
    med = {k: v["median_mean"][i] for k, v in sf["median_over_seeds"].items()}
    for m, value, side in re.findall(r"(mixflow-g[\d.]+) ([\d.]+) \((further from|closer to) the null\)", s):
        assert np.isclose(float(value), med[m], atol=5e-4)
        further = abs(med[m] - med["null"]) > abs(med["fm-control"] - med["null"])
        assert side == ("further from" if further else "closer to"), m
    assert f"median slowed time is {med['fm-control']:.3f}" in s and f"null's {med['null']:.3f}" in s


def check_slow_flow_table(s: str, r: dict) -> None:
    sf = r["slow_flow"]
    i = int(np.argmin(np.abs(np.array(sf["t"]) - 0.875)))
    for label, v in sf["median_over_seeds"].items():
        assert f"{label} {v['median_mean'][i]:.3f} ± {v['median_std'][i]:.3f}" in s, label


def check_run_time(s: str, r: dict) -> None:
    wall, cpu, train = (float(x) for x in re.findall(r"(\d+) s", s))
    secs = r["seconds"]
    assert (wall, cpu, train) == (round(secs["total_wall"]), round(secs["total_cpu"]), round(secs["train"]))


CHECKS = [
    ("The time law alone:", check_time_law),
    ("MixFlow γ = ", check_mixflow),
    ("The trained FM control's FD is", check_fm_optimum),
    ("Noise-level information", check_noise_level),
    ("At t = ", check_slow_flow_move),
    ("Slow-Flow, median slowed time", check_slow_flow_table),
    ("Run time of this study", check_run_time),
]


@pytest.mark.parametrize("path", STUDIES, ids=[p.parent.name for p in STUDIES])
def test_every_study_sentence_follows_its_json(path):
    result = json.loads(path.read_text())
    sentences = study_sentences(result)
    assert len(sentences) >= 5
    for sentence in sentences:
        check = next((c for prefix, c in CHECKS if sentence.startswith(prefix)), None)
        assert check is not None, f"no check for: {sentence}"
        check(sentence, result)


def test_checks_catch_a_wrong_comparison():
    """The checks fail on a summary whose numbers contradict the sentence (they can fail)."""
    result = json.loads(STUDIES[0].read_text())
    sentence = next(s for s in study_sentences(result) if s.startswith("MixFlow γ = "))
    flipped = json.loads(json.dumps(result))
    for cells in flipped["summary"].values():  # MixFlow better where it was worse and vice versa
        for cell in cells.values():
            cell["fd"]["mean"] = 1.0 / cell["fd"]["mean"]
    with pytest.raises(AssertionError):
        check_mixflow(sentence, flipped)


def test_ratio_and_percent_wording_on_fixed_numbers():
    def cell(v):
        return {"fd": {"mean": v, "std": 0.0, "values": [v]}}

    result = {
        "eval_steps": [4, 16],
        "trained_methods": ["fm-control", "fm-beta", "mixflow-g0.5"],
        "gammas": [0.5],
        "summary": {
            "fm-control": {"4": cell(1.0), "16": cell(0.5)},
            "fm-beta": {"4": cell(2.0), "16": cell(0.4)},
            "mixflow-g0.5": {"4": cell(1.5), "16": cell(1.0)},
            "exact MixFlow-optimal g0.5": {"4": cell(1.0), "16": cell(0.8)},
        },
    }
    time_law, mix = study_sentences(result)
    assert "better than flow matching with uniform times (fm-control) at 1 of 2 step counts (FD ratio 0.80–2.00)" in (
        time_law
    )
    assert "worse than the uniform-time FM control at every step count (FD ratio 1.50–2.00)" in mix
    assert "better than the time-law control fm-beta at 1 of 2 step counts (FD ratio 0.75–2.50)" in mix
    assert "its FD is 25–50% worse than the exact MixFlow optimum's" in mix
    for s, check in ((time_law, check_time_law), (mix, check_mixflow)):
        check(s, result)


def test_explanation_asserts_nothing_the_measurements_contradict():
    """The fixed text states the mechanism only; the measured claims live in the generated sentences."""
    for phrase in ("little information", "nothing prevents", "within "):
        assert phrase not in EXPLANATION
    text = study_report_markdown(RESULTS)
    # "within X%" rendered "X% worse than the optimum" as if it were close to it; the phrase must not return
    assert not re.search(r"within \d+(?:\.\d+)?(?:–\d+)?%", text.split("## GPU study")[0])
