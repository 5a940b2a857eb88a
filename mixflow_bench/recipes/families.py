"""Each model family's own sampling rules, in one place: the defaults under every recipe and ``sample --model``.

A family is the paper a zoo model comes from. Its official sampler fixes rules that hold whatever the scale:

* ``sit`` (SiT, ``DATA_AT_1`` time): SDE Euler-Maruyama 250 NFE with a 0.04 drift-only last step; CFG on the
  first 3 of 4 latent channels (DiT legacy); uniform labels; uint8 by ``clamp(127.5 x + 128)`` (rounds); TF32.
  Its Heun is torchdiffeq's ``heun2`` on SiT's uniform ODE grid.
* ``repa`` (REPA, ``DATA_AT_0`` time): the same SDE; CFG on all 4 channels, only inside the guidance interval
  ``0 <= t <= 0.7``; uint8 by ``(x + 1) / 2 * 255`` (truncates). Its Heun is REPA's ``euler_sampler(heun=True)``.
* ``rae`` (RAE DiT^DH, ``DATA_AT_0`` time): Euler on the shifted 50-point grid; autoguidance by the small
  DiT^DH-S of the same resolution (the guide itself, if asked to guide, uses CFG); 50 labels per class;
  uint8 by ``clamp(0, 1) * 255`` (truncates). Its Heun is torchdiffeq's ``heun2`` on the same shifted grid.

:func:`sample_defaults` is the ``sample:`` mapping these rules give and :func:`guidance_rules` the guidance
settings (channels, interval, guide model) that hold once guidance is on; the recipe loader merges both under
every recipe of the model (:func:`merge_defaults`), so anything a recipe or an override sets explicitly (even
``null``) wins. :func:`guidance_kind` is what a guidance scale turns on (``--cfg`` on an unguided recipe or
``--model``, :func:`apply_guidance`).
This module does not import torch: the recipe loader uses it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from mixflow_bench.merge import deep_merge

FAMILIES = ("sit", "repa", "rae")

# zoo name patterns -> family (names as registered in mixflow_bench.models.zoo)
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^sit-(s|b|l|xl)-\d+(-\d+)?$", "sit"),
    (r"^repa-sit-(s|b|l|xl)-\d+(-\d+)?$", "repa"),
    (r"^rae-dith-(s|xl)-(256|512)$", "rae"),
)

_SDE = {"sampler": "sde", "steps": 250, "last_step_size": 0.04, "labels": "uniform", "precision": "tf32"}
_SAMPLE: dict[str, dict[str, Any]] = {
    "sit": {**_SDE, "quantize": "round", "guidance": {"channels": 3}},
    "repa": {**_SDE, "quantize": "truncate", "guidance": {"interval": [0.0, 0.7]}},
    "rae": {
        "sampler": "rae-euler",
        "steps": 50,
        "time_shift": "auto",
        "labels": "equal",
        "quantize": "truncate",
        "precision": "tf32",
        "guidance": {},
    },
}
# the headline guidance scale of each family's released model (RAE: by resolution)
_HEADLINE_SCALE: dict[str, Any] = {"sit": 1.5, "repa": 1.8, "rae": {256: 1.42, 512: 1.5}}


def family_of(model_name: str | None) -> str | None:
    """The family of a zoo model name (None for toy models and names outside the zoo's families)."""
    for pattern, family in _PATTERNS:
        if model_name and re.match(pattern, model_name):
            return family
    return None


def _rae_parts(model_name: str) -> tuple[str, int]:
    size, res = re.match(r"^rae-dith-(s|xl)-(256|512)$", model_name).groups()  # type: ignore[union-attr]
    return size, int(res)


def guidance_kind(model_name: str | None) -> str:
    """What guidance the model's family uses when a scale above 1 is asked for: ``cfg`` or ``autoguidance``."""
    family = family_of(model_name)
    if family == "rae" and _rae_parts(model_name)[0] == "xl":  # type: ignore[arg-type]
        return "autoguidance"
    return "cfg"


def sample_defaults(model_name: str | None) -> dict[str, Any]:
    """The family's ``sample:`` defaults for ``model_name``, guidance aside (empty without a family)."""
    family = family_of(model_name)
    if family is None:
        return {}
    return {k: copy.deepcopy(v) for k, v in _SAMPLE[family].items() if k != "guidance"}


def guidance_rules(model_name: str | None) -> dict[str, Any]:
    """The family's guidance settings that hold whenever it guides (channels, interval, guide model)."""
    family = family_of(model_name)
    if family is None:
        return {}
    rules = copy.deepcopy(_SAMPLE[family]["guidance"])
    if family == "rae" and guidance_kind(model_name) == "autoguidance":
        rules["guide_model"] = f"rae-dith-s-{_rae_parts(model_name)[1]}"  # type: ignore[arg-type]
    return rules


def headline_guidance(model_name: str | None) -> dict[str, Any] | None:
    """The guidance of the family's headline number (kind and scale), None without a family or for a guide."""
    family = family_of(model_name)
    if family is None or (family == "rae" and guidance_kind(model_name) != "autoguidance"):
        return None
    scale = _HEADLINE_SCALE[family]
    if isinstance(scale, dict):
        scale = scale[_rae_parts(model_name)[1]]  # type: ignore[arg-type]
    return {"kind": guidance_kind(model_name), "scale": scale}


def merge_defaults(model_name: str | None, sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` (a recipe's raw ``sample:`` mapping) over the family defaults of ``model_name``.

    The family's guidance rules join a guidance section that guides (kind other than ``none``); an unguided
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

    A scale alone keeps the kind of a section that already guides, turns on the family's kind in one that does
    not, and turns guidance off at 1. When guidance goes from off to on, the family's rules fill the settings the
    section leaves unset (None): SiT's 3 channels, REPA's interval, RAE's guide model.
    """
    out = dict(guidance)
    was_on = out.get("kind", "none") != "none"
    if scale is not None:
        out["scale"] = float(scale)
    if kind is not None:
        out["kind"] = kind
    elif scale is not None:
        out["kind"] = "none" if scale == 1.0 else (out["kind"] if was_on else guidance_kind(model_name))
    if out.get("kind", "none") != "none" and not was_on:
        for key, value in guidance_rules(model_name).items():
            if out.get(key) is None:
                out[key] = value
    return out
