"""Copy the official κ-FC mixed-source network files out of a git mirror into tools/parity/_official/MixFlow.

The destination is ignored by git (official code is never committed). Usage, with the directory of a bare clone
or any git directory of github.com/NazirNayal8/MixFlow::

    python tools/parity/extract_mixed_source.py /path/to/MixFlow.git [--rev HEAD]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

FILES = (
    "src/model/denoiser/songunet.py",
    "src/model/diffusion/unet.py",
    "src/model/diffusion/noise_predictor.py",
    "src/model/loss/distribution.py",
    "src/misc/ode_solver.py",
    "LICENSE",
)
DEST = Path(__file__).resolve().parent / "_official" / "MixFlow"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", type=Path, help="git directory of a MixFlow clone (bare or .git)")
    parser.add_argument("--rev", default="HEAD")
    args = parser.parse_args(argv)
    for name in FILES:
        try:
            text = subprocess.run(
                ["git", f"--git-dir={args.git_dir}", "show", f"{args.rev}:{name}"],
                check=True, capture_output=True,
            ).stdout
        except subprocess.CalledProcessError as exc:
            print(f"cannot read {name} at {args.rev} from {args.git_dir}: {exc.stderr.decode().strip()}",
                  file=sys.stderr)
            return 1
        out = DEST / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(text)
    for pkg in ("src", "src/model", "src/model/denoiser", "src/model/diffusion", "src/model/loss", "src/misc"):
        (DEST / pkg / "__init__.py").touch()
    print(f"wrote {len(FILES)} files under {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
