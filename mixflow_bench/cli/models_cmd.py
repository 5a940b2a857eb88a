"""`mixflow-bench models list`: the model registry (mixflow_bench/models/zoo.py) at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich import box

from mixflow_bench.cli.common import console, json_option, write_json_output


def model_rows() -> list[dict[str, Any]]:
    """One row per registered model: name, family, resolution, default sampler and steps, weights, decoder."""
    from mixflow_bench.models.zoo import get_spec, list_models

    rows = []
    for name in list_models():
        spec = get_spec(name)
        defaults = spec.sampler_defaults
        rows.append({
            "name": name,
            "family": spec.family,
            "resolution": spec.resolution,
            "sampler": defaults.get("sampler"),
            "steps": defaults.get("steps"),
            "artifact": spec.checkpoint,
            "decoder": spec.decoder,
            "description": spec.description,
        })  # fmt: skip
    return rows


@click.group(name="models")
def command() -> None:
    """The registered models (architectures with their released weights and sampling defaults)."""


@command.command(name="list")
@json_option("Also write the rows as JSON to PATH ('-': stdout, instead of the table).")
def list_cmd(json_path: Path | None) -> None:
    """List every model: family, resolution, default sampler and steps, the artifact of its released weights
    ('-': none released; train it or pass --checkpoint) and its image decoder."""
    from mixflow_bench.terminal import fitted

    rows = model_rows()
    if write_json_output(json_path, rows):
        return
    columns = ["name", "family", "px", "sampler", "weights", "decoder"]
    cells = [[r["name"], r["family"] or "-", str(r["resolution"] or "-"), f"{r['sampler']}-{r['steps']}",
              r["artifact"] or "-", r["decoder"] or "-"] for r in rows]  # fmt: skip
    console.print(fitted("Models", columns, cells, console.width, box=box.SIMPLE_HEAD, pad_edge=False))
