"""`mixflow-bench table`: produced results beside the papers' numbers, as rich, Markdown, LaTeX, CSV or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from mixflow_bench.cli.common import console
from mixflow_bench.runs import RUNS

README_DEFAULT = "__results_readme__"


def _choose(text: str | None, known: list[str], option: str) -> list[str] | None:
    """The comma-separated names of ``text``, each one of ``known`` (None when ``text`` is None)."""
    if text is None:
        return None
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}", param_hint=option)
    return chosen


@click.command(name="table")
@click.option("--results", "results_dir", type=click.Path(file_okay=False, path_type=Path), default=RUNS,
              show_default=True, help="Directory searched (recursively) for result records: every run's by default.")
@click.option("--reported", "reported_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reported-numbers file (default: the package's results/reported.yaml).")
@click.option("--markdown", is_flag=False, flag_value=README_DEFAULT, default=None, metavar="[PATH]",
              help="Write Markdown to PATH; without PATH, regenerate README.md of the --results directory.")
@click.option("--latex", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write LaTeX (booktabs).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write CSV.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write JSON.")
@click.option("--produced-only", is_flag=True, help="Leave out reported rows that have no produced result.")
@click.option("--update-committed", is_flag=True,
              help="Copy the records and study write-ups under --results into the checkout's results/ (records to "
              "results/produced/) and regenerate results/README.md; the only command that writes there.")
@click.option("--metrics", "metrics_text", default=None, metavar="LIST",
              help="Terminal view: comma-separated metrics to show (e.g. fid,is); files keep every metric.")
@click.option("--columns", "columns_text", default=None, metavar="LIST",
              help="Terminal view: comma-separated descriptive columns of experiment, method, guidance, protocol, "
              "note (default: all); files keep every column.")
def command(
    results_dir: Path,
    reported_path: Path | None,
    markdown: str | None,
    latex: Path | None,
    csv_path: Path | None,
    json_path: Path | None,
    produced_only: bool,
    update_committed: bool,
    metrics_text: str | None,
    columns_text: str | None,
) -> None:
    """Join result records with results/reported.yaml and show produced vs reported with the difference.

    In a terminal narrower than the table (or a pipe, 80 columns) the view turns to long form, one line per row
    and metric, so every number stays readable; --markdown, --latex, --csv and --json always write the full table.
    """
    from mixflow_bench.results import table as tb
    from mixflow_bench.results.records import load_records, write_json_atomic
    from mixflow_bench.results.reported import ReportedError, load_reported

    try:
        reported = load_reported(reported_path)
    except ReportedError as exc:
        raise click.ClickException(str(exc)) from exc
    written = []
    if update_committed:
        from mixflow_bench.results.committed import COMMITTED, copy_into_committed

        if not COMMITTED.is_dir():
            raise click.ClickException(f"no {COMMITTED}/ folder here: run --update-committed in the checkout")
        if results_dir.resolve() == COMMITTED.resolve():
            raise click.UsageError("--update-committed copies from --results into results/: give the runs' folder")
        copied = copy_into_committed(results_dir, COMMITTED)
        console.print(f"copied {len(copied)} file(s) from {results_dir} into {COMMITTED}/")
        results_dir, markdown = COMMITTED, README_DEFAULT  # then the committed table and its README
    records = load_records(results_dir)
    table = tb.build_table(records, reported, include_unproduced=not produced_only)
    metrics = _choose(metrics_text, list(dict.fromkeys([*tb.METRIC_ORDER, *table.metrics])), "--metrics")
    columns = tuple(_choose(columns_text, list(tb.VIEW_COLUMNS), "--columns") or tb.VIEW_COLUMNS)
    for t in tb.to_rich(table, width=console.width, metrics=metrics, columns=columns):
        console.print(t)
    console.print(f"{len(records)} result record(s) from {results_dir}, {len(reported)} reported entries.")

    if markdown == README_DEFAULT:
        from mixflow_bench.experiments.regime_report import regime_report_markdown
        from mixflow_bench.toy.report import study_report_markdown

        text = tb.readme_markdown(table)
        studies = "\n".join(part for part in (study_report_markdown(results_dir), regime_report_markdown(results_dir))
                             if part)  # fmt: skip
        written.append(tb.write_text_atomic(results_dir / "README.md", text + ("\n" + studies if studies else "")))
    elif markdown is not None:
        written.append(tb.write_text_atomic(Path(markdown), tb.to_markdown(table)))
    if latex is not None:
        written.append(tb.write_text_atomic(latex, tb.to_latex(table)))
    if csv_path is not None:
        written.append(tb.write_text_atomic(csv_path, tb.to_csv(table)))
    if json_path is not None:
        written.append(write_json_atomic(json_path, tb.to_json(table)))
    for path in written:
        console.print(f"wrote [bold]{path}[/bold]")
