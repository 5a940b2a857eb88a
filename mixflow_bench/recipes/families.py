"""A model's own sampling rules as recipes and ``sample --model`` apply them: a view on its zoo entry.

The rules themselves (default sampler, steps, quantisation, labels, precision, default guidance, the guidance a
scale turns on, its headline scale, and the settings that hold whenever it guides) are declared by each entry of
:mod:`mixflow_bench.models.zoo`. :func:`sample_defaults` is the ``sample:`` mapping they give and
:func:`guidance_rules` the guidance settings that hold once guidance is on; the recipe loader merges both under
every recipe of the model (:func:`merge_defaults`), so anything a recipe or an override sets explicitly (even
``null``) wins. :func:`guidance_kind` is what a guidance scale turns on (``--cfg`` on an unguided recipe or
``--model``, :func:`apply_guidance`). The zoo (and torch) is imported on first use.
"""

from __future__ import annotations

import copy
from typing import Any

from mixflow_bench.merge import deep_merge


def _spec(model_name: str | None) -> Any:
    """The zoo entry of ``model_name`` (None outside the zoo)."""
    if not model_name:
        return None
    from mixflow_bench.models.zoo import ZOO

    return ZOO.get(model_name)


def family_of(model_name: str | None) -> str | None:
    """The family (the paper) of a zoo model, None outside the zoo."""
    spec = _spec(model_name)
    return None if spec is None else spec.family


def guidance_kind(model_name: str | None) -> str | None:
    """What guidance the model uses when a scale is asked for (``cfg``, ``autoguidance``, ``probabilistic``);
    None for a model that takes none (unconditional); ``cfg`` outside the zoo."""
    spec = _spec(model_name)
    return "cfg" if spec is None else spec.guidance_kind


def sample_defaults(model_name: str | None) -> dict[str, Any]:
    """The model's ``sample:`` defaults (a ``guidance`` entry: its default guidance); empty outside the zoo."""
    spec = _spec(model_name)
    return {} if spec is None else copy.deepcopy(spec.sampler_defaults)


def guidance_rules(model_name: str | None) -> dict[str, Any]:
    """The settings that hold whenever the model guides (channels, interval, guide model)."""
    spec = _spec(model_name)
    return {} if spec is None else copy.deepcopy(spec.guidance_rules)


def merge_defaults(model_name: str | None, sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` (a recipe's raw ``sample:`` mapping) over the sampling defaults of ``model_name``.

    The model's guidance rules join a guidance section that guides (kind other than ``none``); an unguided
    section stays as it is.
    """
    merged = deep_merge(sample_defaults(model_name), sample)
    guidance = merged.get("guidance")
    if isinstance(guidance, dict) and guidance.get("kind", "none") != "none":
        merged["guidance"] = deep_merge(guidance_rules(model_name), guidance)
    return merged


def apply_guidance(
    model_name: str | None, guidance: dict[str, Any], *, kind: str | None = None, scale: float | None = None
) -> dict[str, Any]:
    """``guidance`` (a full guidance section) after an explicit ``kind`` and/or ``scale`` (``--guidance``, ``--cfg``).

    A scale alone keeps the kind of a section that already guides, turns on the model's kind in one that does
    not, and turns guidance off at 1. A kind alone that turns guidance on takes the model's headline scale of that
    kind. When guidance goes from off to on, the model's rules fill the settings the section leaves unset (None):
    SiT's 3 channels, REPA's interval, RAE's guide model. A model that takes no guidance refuses both
    (ValueError).
    """
    spec = _spec(model_name)
    own_kind = guidance_kind(model_name)
    if own_kind is None and (scale is not None or kind not in (None, "none")):
        raise ValueError(f"model {model_name} is unconditional: it takes no guidance")
    out = dict(guidance)
    was_on = out.get("kind", "none") != "none"
    if scale is not None:
        out["scale"] = float(scale)
    if kind is not None:
        out["kind"] = kind
        if scale is None and not was_on and spec is not None and kind == own_kind and spec.guidance_scale:
            out["scale"] = spec.guidance_scale
    elif scale is not None:
        out["kind"] = "none" if scale == 1.0 else (out["kind"] if was_on else own_kind)
    if out.get("kind", "none") != "none" and not was_on:
        for key, value in guidance_rules(model_name).items():
            if out.get(key) is None:
                out[key] = value
    return out
