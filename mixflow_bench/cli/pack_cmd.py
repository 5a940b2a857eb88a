"""`mixflow-bench pack`: a folder of PNG/JPEG images -> an ADM sample npz."""

from __future__ import annotations

from pathlib import Path

import click

from mixflow_bench.cli.common import console


@click.command(name="pack")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def command(folder: Path, out: Path) -> None:
    """Pack the PNG and JPEG images of FOLDER (sorted by name, one size) into OUT as arr_0 uint8 N×H×W×3.

    A damaged file or a non-image is named in one line and nothing is written."""
    from mixflow_bench.metrics.npz_stream import NpzFormatError
    from mixflow_bench.metrics.pack import list_images, pack_folder
    from mixflow_bench.progress import progress_bar

    try:
        total = len(list_images(folder))
        with progress_bar("packing", total=total) as bar:
            path, shape = pack_folder(folder, out, progress=bar)
    except NpzFormatError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"wrote {path}: arr_0 uint8 {shape}")
