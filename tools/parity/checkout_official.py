"""Lay out the official SiT, REPA and RAE code at the pinned commits of ``official.json``.

Each repository is exported (``git archive``, no history) into ``tools/parity/_official/<NAME>`` (ignored by
git), images and notebooks that no import needs are left out (``strip`` in ``official.json``: the export of
all three stays near 1 MB, small enough to travel with a working tree), and the commit is written to
``<NAME>/COMMIT``, which ``parity.py`` and ``benchmarks/bench_official.py`` report.

    python tools/parity/checkout_official.py                      # clones from github.com
    python tools/parity/checkout_official.py --source SiT=/path/to/SiT.git --source RAE=/path/to/RAE
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINS = json.loads((HERE / "official.json").read_text())
DEFAULT_DEST = HERE / "_official"


def _git_dir(source: str, scratch: Path) -> str:
    """A git directory holding ``source``'s objects: the local repository itself, or a bare clone of a URL."""
    local = Path(source)
    if local.exists():
        return str(local)
    target = scratch / "clone.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", source, str(target)], check=True)
    return str(target)


def checkout(name: str, source: str | None, dest: Path, force: bool = False) -> Path:
    """Export repository ``name`` at its pinned commit into ``dest/name``; returns that folder."""
    pin = PINS[name]
    out = dest / name
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        git_dir = _git_dir(source or f"https://github.com/{pin['repo']}", Path(tmp))
        archive = subprocess.run(
            ["git", f"--git-dir={git_dir}" if Path(git_dir, "objects").is_dir() else f"--git-dir={git_dir}/.git",
             "archive", "--format=tar", pin["commit"]],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    for rel in pin.get("strip", []):
        path = out / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (out / "COMMIT").write_text(pin["commit"] + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=sorted(PINS), help=f"repositories (default: {sorted(PINS)})")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=GIT",
                        help="a local repository (bare or not) or URL to take NAME from")  # fmt: skip
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--force", action="store_true", help="replace existing exports")
    args = parser.parse_args(argv)
    sources = dict(s.split("=", 1) for s in args.source)
    unknown = sorted(set(args.names) - set(PINS))
    if unknown:
        raise SystemExit(f"unknown repositories {unknown}; known: {sorted(PINS)}")
    for name in args.names:
        out = checkout(name, sources.get(name), args.dest, args.force)
        print(f"{PINS[name]['repo']} @ {PINS[name]['commit'][:12]} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
