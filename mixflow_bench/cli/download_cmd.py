"""`mixflow-bench download`: fetch artifacts into the cache, or list what the cache holds."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from mixflow_bench.cli.common import console


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _recipe_artifacts(recipe: str) -> list[str]:
    from mixflow_bench.recipes.artifacts import artifacts_for_recipe

    try:
        from mixflow_bench.recipes import load_recipe  # type: ignore[attr-defined]
    except ImportError as exc:
        raise click.ClickException(
            f"cannot resolve recipe {recipe!r}: recipe loading (mixflow_bench.recipes.load_recipe) is not "
            f"available in this build ({exc})"
        ) from exc
    try:
        loaded = load_recipe(recipe)
    except Exception as exc:
        raise click.ClickException(f"cannot load recipe {recipe!r}: {exc}") from exc
    data = loaded.to_dict() if hasattr(loaded, "to_dict") else loaded
    return artifacts_for_recipe(data)


def _list_table(width: int | None = None) -> Any:
    """Every artifact with its state; stacked (one field a line) where one row a line does not fit ``width``."""
    from mixflow_bench.hub import hub_home, registry, status
    from mixflow_bench.terminal import fitted

    rows = []
    colours = {"verified": "green", "unverified": "yellow", "present": "yellow", "missing": "red"}
    for name, art in sorted(registry().items()):
        st = status(name)
        state = f"[{colours[st.state]}]{st.state}[/]"
        if st.state == "missing" and st.partial_bytes:
            state += f" ({_human(st.partial_bytes)} partial)"
        expected = (
            _human(st.expected_size)
            if st.expected_size
            else (f"~{_human(art.approx_size)}" if art.approx_size else "unknown")
        )
        source = f"hf:{art.hf.repo_id}@{art.hf.revision[:8]}" if art.hf else art.urls[0].split("/")[2]
        how = st.integrity
        if how == "pinned sha256" and art.sha256_source:
            how += f" ({art.sha256_source})"
        rows.append([name, art.kind, state, _human(st.size), expected, source, how])
    columns = ["name", "kind", "state", "size", "expected", "source", "integrity"]
    return fitted(f"Artifacts (cache: {hub_home()})", columns, rows, width)


def _verify(names: list[str], only_cached: bool) -> None:
    """``--verify``: re-hash each cached file and report; exit 1 naming the corrupt ones."""
    from mixflow_bench.hub.fetch import deep_verify

    table = Table(title="Verified artifacts (re-hashed)")
    for column in ("name", "state", "size", "path"):
        table.add_column(column)
    corrupt: list[str] = []
    for name in names:
        st, problem = deep_verify(name)
        if st.state == "missing":
            if not only_cached:
                table.add_row(name, "[red]missing[/]", "-", "-")
            continue
        if problem:
            corrupt.append(problem)
            table.add_row(name, "[red]corrupt[/]", _human(st.size), str(st.path))
        else:
            colour = "green" if st.state == "verified" else "yellow"
            state = st.state if st.state == "verified" else f"{st.state}: {st.integrity}"
            table.add_row(name, f"[{colour}]{state}[/]", _human(st.size), str(st.path))
    console.print(table)
    if corrupt:
        raise click.ClickException("corrupt files in the cache:\n" + "\n".join(corrupt))


@click.command(name="download")
@click.argument("names", nargs=-1)
@click.option("--recipe", "recipe", default=None, help="Fetch every artifact a recipe refers to.")
@click.option("--all", "all_", is_flag=True, help="Fetch every artifact in the registry.")
@click.option(
    "--list", "list_", is_flag=True,
    help="Show each artifact's state and how its integrity is checked (host sha256, pinned, or unverified).",
)
@click.option("--offline", is_flag=True, help="Use only the cache; fail naming what is missing.")
@click.option(
    "--force", is_flag=True,
    help="Download again and replace the cached file and its hash-lock record (repairs a bad first download).",
)
@click.option(
    "--verify", is_flag=True,
    help="Re-hash the cached files (the named ones, else every cached artifact) whatever their markers say, and "
    "report each; nothing is downloaded. Exit status 1 when a file is corrupt.",
)
@click.option(
    "--no-progress", is_flag=True, help="Hide progress bars (a process waiting for another's lock still says so)."
)
def command(
    names: tuple[str, ...],
    recipe: str | None,
    all_: bool,
    list_: bool,
    offline: bool,
    force: bool,
    verify: bool,
    no_progress: bool,
) -> None:
    """Download checkpoints, reference batches and weights into the cache, verifying each file's sha256 (a
    pinned or host-published hash, else the hash recorded at its first download) and its content.

    NAME... are artifact names (see --list). The cache is $MIXFLOW_BENCH_HOME
    (default ~/.cache/mixflow-bench). Run it on a machine with network (a login node); compute nodes then
    read the same cache with MIXFLOW_BENCH_OFFLINE=1.
    """
    from mixflow_bench.hub import DownloadError, OfflineError, artifact_names, fetch, status
    from mixflow_bench.hub.offline import offline_mode

    offline = offline or offline_mode()

    if list_:
        if names or recipe or all_:
            raise click.UsageError("--list takes no artifact names, --recipe or --all")
        console.print(_list_table(console.width))
        return
    chosen: list[str] = list(names)
    if recipe:
        chosen += _recipe_artifacts(recipe)
    if all_:
        chosen += artifact_names()
    if not chosen and recipe and not names and not all_:  # a recipe that needs nothing: ready to reproduce
        console.print(f"nothing to download: recipe {recipe!r} uses no artifacts")
        return
    if not chosen and not verify:
        raise click.UsageError("name one or more artifacts, or use --recipe R, --all or --list")
    unknown = [n for n in chosen if n not in artifact_names()]
    if unknown:  # a name mistake (exit 1, with the closest names), as everywhere else
        from mixflow_bench.errors import UnknownNameError

        raise UnknownNameError("artifact", unknown[0], artifact_names())
    chosen = list(dict.fromkeys(chosen))
    if verify:
        _verify(chosen or artifact_names(), only_cached=not chosen)
        return

    table = Table(title="Fetched artifacts")
    for column in ("name", "state", "size", "path"):
        table.add_column(column)
    failures: list[str] = []
    repairs: list[str] = []
    for name in chosen:
        try:
            path = fetch(name, offline=offline, progress=not no_progress, force=force, report=repairs.append)
        except (DownloadError, OfflineError, ValueError) as exc:
            text = str(exc)
            failures.append(text if text.startswith((f"{name}:", f"artifact {name!r}")) else f"{name}: {text}")
            table.add_row(name, "[red]failed[/]", "-", "-")
            continue
        st = status(name)
        colour = "green" if st.state == "verified" else "yellow"
        state = st.state if st.state == "verified" else f"{st.state}: {st.integrity}"
        table.add_row(name, f"[{colour}]{state}[/]", _human(st.size), str(path))
    console.print(table)
    for line in repairs:
        console.print(f"[yellow]repaired[/] {line}", markup=True, highlight=False)
    if failures:
        raise click.ClickException("some artifacts could not be fetched:\n" + "\n".join(failures))
