"""Every artifact a recipe needs, from the hub's table (checkpoints, decoders, data encoders) and the metrics
registry (the evaluator's network, FD-DINOv2's weights)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from mixflow_bench.hub.registry import codec_artifacts, model_artifacts, registry
from mixflow_bench.metrics.registry import artifacts_for


def _zoo_decoder(model: str) -> str | None:
    from mixflow_bench.models.zoo import ZOO

    spec = ZOO.get(model)
    return spec.decoder if spec is not None else None


def artifacts_for_recipe(recipe: Any) -> list[str]:
    """Every artifact any stage of a recipe needs, once each, in a stable order.

    That is: artifact names written anywhere in the recipe (a mapping, or an object with ``to_dict()``); the
    model's checkpoint (the zoo default when ``model.checkpoint`` is empty) and its decoder's files; the
    autoguidance guide model's; the training data encoder's; the Inception weights for ADM metrics and the
    DINOv2 ViT-L weights for FD-DINOv2.
    """
    if hasattr(recipe, "to_dict") and not isinstance(recipe, Mapping):
        recipe = recipe.to_dict()
    names = set(registry())
    found: dict[str, None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if value in names:
                found[value] = None
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item)

    walk(recipe)
    section = (lambda key: recipe.get(key) or {}) if isinstance(recipe, Mapping) else (lambda key: {})
    implied: list[str] = []
    model = section("model")
    if model.get("name"):
        needed = model_artifacts(model["name"], model.get("checkpoint"))
        if section("image_study"):  # the study trains the model in pixel space: its latent decoder is never used
            spec_decoder = codec_artifacts(_zoo_decoder(model["name"]) or "", None)
            needed = [n for n in needed if n not in spec_decoder]
        implied += needed
    guidance = section("sample").get("guidance") or {}
    if guidance.get("kind") == "autoguidance" and guidance.get("guide_model"):
        implied += model_artifacts(guidance["guide_model"], guidance.get("guide_checkpoint"))
    data = section("data")
    if data.get("encoder"):
        implied += codec_artifacts(data["encoder"], data.get("resolution"))
    evaluation = section("eval")
    if evaluation.get("metrics"):
        # the evaluator's default network (a recipe may name another), FD-DINOv2's weights; metrics the registry
        # does not know are left to recipe validation, which reports them
        with suppress(ValueError):
            implied += artifacts_for([str(m) for m in evaluation["metrics"]], evaluation.get("evaluator") or "adm",
                                     evaluation.get("inception_weights"), evaluation.get("dinov2_weights"))  # fmt: skip
    for name in implied:
        if name in names:
            found[name] = None
    return list(found)
