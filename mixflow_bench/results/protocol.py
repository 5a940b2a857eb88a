"""The evaluation protocol behind a number: sampler, steps, NFE, guidance, interval, samples and evaluator.

Every reported number (``results/reported.yaml``) and every produced record carries one, as a flat mapping with
the fields of :data:`FIELDS`. A value a paper does not state is the string ``unknown``. ``mixflow-bench table``
sets a produced number beside a reported one only when no field that both state differs (:func:`compare`).

Fields:
  sampler      a registered sampler (mixflow_bench.samplers: sde, euler, heun, dopri5, rae-euler, GMFlow's gm-*,
               the κ-FC paper's manual-heun and rk45, ...) or unknown
  steps        sampler steps (the recipe's ``sample.steps``)
  nfe          network evaluations per image, guidance not counted, as the sampler registry counts them (Heun: 2
               per step, REPA's Heun 2 per step but the last, which is an Euler step; RAE's 50-point grid: 49)
  guidance     none | cfg | autoguidance | probabilistic (GMFlow)
  scale        guidance scale                                   (guided protocols only)
  channels     guided latent channels: an integer or ``all``     (guided protocols only)
  interval     ``none`` or [lo, hi] in the model's own time      (guided protocols only)
  num_samples  images evaluated
  evaluator    adm (OpenAI's ADM suite or this project's equivalent), torchmetrics-train (torchmetrics
               FrechetInceptionDistance(normalize=True) against the training set: the κ-FC paper's), fd-data (toy
               data-space FD), ...

Fields stated where they matter (:data:`OPTIONAL_FIELDS`; a reported entry without one does not compare it):
  spectral        GM-SDE samplers: x0 drawn with GMFlow's spectral sampling (true) or per pixel (false; the only
                  way this project samples)
  reference_size  images in the FID reference set: a count, or ``all`` (every image of a folder data set)
  quantize        round | truncate: how samples become uint8 (truncate: torchmetrics' ``normalize=True`` ``.byte()``)
  implementation  adaptive ODE samplers: the library routine (torchdiffeq-dopri5, scipy-rk45), whose step-size
                  control and evaluation counts differ
"""

from __future__ import annotations

import math
from typing import Any

from mixflow_bench.samplers import sampler_names
from mixflow_bench.samplers import sampler_nfe as registry_nfe

UNKNOWN = "unknown"
GUIDANCE = ("none", "cfg", "autoguidance", "probabilistic")
GUIDED_FIELDS = ("scale", "channels", "interval")
FIELDS = ("sampler", "steps", "nfe", "guidance", *GUIDED_FIELDS, "num_samples", "evaluator")
OPTIONAL_FIELDS = ("spectral", "reference_size", "quantize", "implementation")
QUANTIZE = ("round", "truncate")
ADM_METRICS = {"fid", "sfid", "is", "prec", "rec", "precision", "recall"}


def _samples_mixture(sampler: Any) -> bool:
    """Whether ``sampler`` is a registered GM-SDE sampler (draws x0 from the predicted mixture)."""
    from mixflow_bench.samplers import SAMPLERS

    return isinstance(sampler, str) and getattr(SAMPLERS.get(sampler), "samples_mixture", False)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_value(name: str, v: Any) -> str | None:
    """A problem with the value of field ``name``, or None."""
    if v == UNKNOWN:
        return None
    if name == "sampler":
        return None if v in sampler_names() else f"must be one of {list(sampler_names())} or {UNKNOWN!r}"
    if name == "guidance":
        return None if v in GUIDANCE else f"must be one of {list(GUIDANCE)}"
    if name in ("steps", "nfe", "num_samples"):
        return None if _positive_int(v) else f"must be a positive integer or {UNKNOWN!r}"
    if name == "scale":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return None if ok else f"must be a number or {UNKNOWN!r}"
    if name == "channels":
        return None if v == "all" or _positive_int(v) else f"must be a positive integer, 'all' or {UNKNOWN!r}"
    if name == "interval":
        ok = v == "none" or (
            isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
            and v[0] <= v[1]
        )  # fmt: skip
        return None if ok else f"must be 'none', [lo, hi] with lo <= hi, or {UNKNOWN!r}"
    if name in ("evaluator", "implementation"):
        return None if isinstance(v, str) and v else f"must be a name or {UNKNOWN!r}"
    if name == "spectral":
        return None if isinstance(v, bool) else f"must be true, false or {UNKNOWN!r}"
    if name == "reference_size":
        return None if v == "all" or _positive_int(v) else f"must be a positive integer, 'all' or {UNKNOWN!r}"
    if name == "quantize":
        return None if v in QUANTIZE else f"must be one of {list(QUANTIZE)} or {UNKNOWN!r}"
    return "unknown field"


def check_protocol(raw: Any, guidance: str) -> tuple[dict[str, Any] | None, str | None]:
    """Validate a reported protocol (``guidance`` comes from the entry); returns (protocol, problem)."""
    if not isinstance(raw, dict):
        return None, "protocol is missing (every reported number says how it was measured; use 'unknown')"
    raw = {**raw, "guidance": raw.get("guidance", guidance)}
    if raw["guidance"] != guidance:
        return None, f"protocol.guidance {raw['guidance']!r} differs from the entry's guidance {guidance!r}"
    unknown = sorted(set(raw) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return None, f"protocol has unknown field(s) {unknown} (fields: {list(FIELDS + OPTIONAL_FIELDS)})"
    needed = [f for f in FIELDS if guidance != "none" or f not in GUIDED_FIELDS]
    missing = [f for f in needed if f not in raw]
    if missing:
        return None, f"protocol lacks {missing} (write {UNKNOWN!r} for what the source does not state)"
    for name in needed:
        problem = _check_value(name, raw[name])
        if problem:
            return None, f"protocol.{name} = {raw[name]!r} {problem}"
    for name in OPTIONAL_FIELDS:
        problem = _check_value(name, raw[name]) if name in raw else None
        if problem:
            return None, f"protocol.{name} = {raw[name]!r} {problem}"
    clean = {f: raw[f] for f in (*needed, *OPTIONAL_FIELDS) if f in raw}
    if isinstance(clean.get("interval"), tuple):
        clean["interval"] = list(clean["interval"])
    return clean, None


def sampler_nfe(sampler: str, steps: int, model: str | None = None) -> int | str:
    """Network evaluations per image of ``sampler`` with ``steps`` steps for zoo model ``model``, as the sampler
    registry counts them (guidance not counted; adaptive samplers such as dopri5 and rk45: unknown).

    The model's family matters for ``heun``: REPA's Heun ends on a plain Euler step, ``2 * steps - 1``.
    """
    from mixflow_bench.recipes.families import family_of

    nfe = registry_nfe(sampler, steps, family_of(model))
    return UNKNOWN if nfe is None else nfe


def evaluator_of(metrics: list[str] | tuple[str, ...], evaluation: dict[str, Any] | None = None) -> str:
    """The evaluator that computes ``metrics``: ``adm`` for FID/sFID/IS/Prec/Rec, else the metric's own name.

    ``evaluation`` (a recipe's ``eval:`` mapping) may pick ``evaluator: torchmetrics`` (the κ-FC paper's FID):
    ``torchmetrics-train`` when its reference is the training split (``reference_data.split``), else
    ``torchmetrics``. ``resize: clean`` (clean-fid's resize) is a protocol of its own: ``adm-clean-resize``."""
    names = set(metrics)
    evaluation = evaluation or {}
    if evaluation.get("evaluator") == "torchmetrics" and names and names <= ADM_METRICS:
        split = (evaluation.get("reference_data") or {}).get("split")
        return f"torchmetrics-{split}" if split else "torchmetrics"
    if names and names <= ADM_METRICS:
        return "adm-clean-resize" if evaluation.get("resize") == "clean" else "adm"
    return "+".join(sorted(names)) if names else UNKNOWN


def reference_size_of(evaluation: dict[str, Any] | None) -> int | str | None:
    """Images in the FID reference a recipe's ``eval:`` mapping builds from ``reference_data``: its ``limit``,
    else CIFAR-10's 50,000 training images, else ``all``; None when the reference is a given batch."""
    data = (evaluation or {}).get("reference_data")
    if not isinstance(data, dict):
        return None
    if data.get("limit"):
        return int(data["limit"])
    return 50_000 if data.get("dataset") == "cifar10" else "all"


def protocol_of(
    sample: Any,
    metrics: list[str] | tuple[str, ...] | None = None,
    model: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The protocol a recipe's ``sample:`` section (a SampleSection or its dict) and evaluation metrics produce
    for zoo model ``model`` (its family decides the Heun's NFE); ``evaluation``: the ``eval:`` mapping."""
    from mixflow_bench.samplers import SAMPLERS

    s = sample if isinstance(sample, dict) else {k: getattr(sample, k) for k in ("sampler", "steps", "num", "quantize")}
    g = sample["guidance"] if isinstance(sample, dict) else sample.guidance
    g = g if isinstance(g, dict) else {k: getattr(g, k) for k in ("kind", "scale", "channels", "interval")}
    kind = g.get("kind", "none")
    if kind == "cfg" and float(g.get("scale", 1.0)) == 1.0:
        kind = "none"  # CFG at scale 1 is the conditional model alone
    out: dict[str, Any] = {"sampler": s["sampler"], "steps": int(s["steps"]),
                           "nfe": sampler_nfe(s["sampler"], int(s["steps"]), model), "guidance": kind}  # fmt: skip
    if kind != "none":
        out["scale"] = float(g.get("scale", 1.0))
        out["channels"] = g.get("channels") or "all"
        out["interval"] = list(g["interval"]) if g.get("interval") is not None else "none"
    out["num_samples"] = int(s["num"])
    out["evaluator"] = evaluator_of(list(metrics), evaluation) if metrics is not None else UNKNOWN
    if _samples_mixture(s["sampler"]):
        out["spectral"] = False  # x0 is drawn per pixel; spectral sampling is not implemented
    implementation = getattr(SAMPLERS.get(s["sampler"]), "implementation", None)
    if implementation:
        out["implementation"] = implementation
    if s.get("quantize") in QUANTIZE:
        out["quantize"] = s["quantize"]
    size = reference_size_of(evaluation)
    if size is not None:
        out["reference_size"] = size
    return out


def study_protocol(study: Any, metric_keys: Any, sampler: str = "euler") -> dict[str, Any]:
    """The protocol of a small CPU study (``study:`` section, a StudySection or its dict): ``sampler`` (a registered
    name: Euler, or the GM solver of a GMFlow study row) at each of its evaluation step counts (one network
    evaluation per step), unguided, its evaluation sample count; the evaluator names the metrics (``fd@8`` ...)."""
    get = study.get if isinstance(study, dict) else lambda k: getattr(study, k)
    steps = list(get("eval_steps"))
    names = sorted({str(k).split("@")[0] for k in metric_keys if not str(k).endswith("_std")})
    out = {"sampler": sampler, "steps": steps, "nfe": steps, "guidance": "none",
           "num_samples": int(get("num_eval_samples")), "evaluator": "+".join(names) or UNKNOWN}  # fmt: skip
    if _samples_mixture(sampler):
        out["spectral"] = False
    return out


def record_protocol(record: dict[str, Any]) -> dict[str, Any] | None:
    """A result record's protocol: its ``protocol`` field, else derived from its recipe; None when neither."""
    if isinstance(record.get("protocol"), dict):
        protocol = dict(record["protocol"])
        if "guidance" not in protocol and record.get("guidance"):  # the record's join key states it
            protocol["guidance"] = record["guidance"]
        return protocol
    recipe = record.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("study"), dict):
        return study_protocol(recipe["study"], record.get("metrics") or {})
    if isinstance(recipe, dict) and isinstance(recipe.get("sample"), dict):
        metrics = (recipe.get("eval") or {}).get("metrics")
        model = (recipe.get("model") or {}).get("name") if isinstance(recipe.get("model"), dict) else None
        return protocol_of(recipe["sample"], metrics, model, recipe.get("eval") or None)
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def compare(produced: dict[str, Any] | None, reported: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(differences, fields the source leaves unknown) between a produced and a reported protocol.

    A field the source states differs when the produced protocol has another value or does not state it; a field
    the source leaves ``unknown`` is not a difference but is listed. Guided-only fields count for guided protocols.
    """
    produced = produced or {}
    differs, unstated = [], []
    fields = [f for f in FIELDS if reported.get("guidance") != "none" or f not in GUIDED_FIELDS]
    fields += [f for f in OPTIONAL_FIELDS if f in reported]
    for f in fields:
        r = reported.get(f, UNKNOWN)
        if r == UNKNOWN:
            unstated.append(f)
            continue
        p = produced.get(f, UNKNOWN)
        if not _same(p, r):
            differs.append(f"{f} {_fmt(p)} (paper {_fmt(r)})")
    return differs, unstated


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def describe(protocol: dict[str, Any] | None) -> str:
    """A short line: ``heun-250 (500 NFE), cfg 1.5 on 3 ch, interval none, 50K, adm``; ``?`` for unknown."""
    if not protocol:
        return "protocol not recorded"

    def v(name: str) -> str:
        value = protocol.get(name, UNKNOWN)
        return "?" if value == UNKNOWN else _fmt(value)

    n = protocol.get("num_samples", UNKNOWN)
    count = "?" if n == UNKNOWN else (f"{n / 1000:g}K" if isinstance(n, int) and n >= 1000 else str(n))
    text = f"{v('sampler')}-{v('steps')} ({v('nfe')} NFE)"
    g = protocol.get("guidance", UNKNOWN)
    if g == "none":
        text += ", no guidance"
    else:
        text += f", {v('guidance')} {v('scale')} on {v('channels')} ch, interval {v('interval')}"
    return f"{text}, {count}, {v('evaluator')}"
