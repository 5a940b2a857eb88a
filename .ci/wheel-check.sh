#!/usr/bin/env bash
# The package as users install it: build the wheel, install it (without dependencies) into a fresh virtual
# environment that borrows the dependencies of the current one, and run it from a folder outside the checkout
# with its own MIXFLOW_BENCH_HOME: every recipe is listed, tiny-digits reproduces and `table` shows its result.
# About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# built from a copy of the committed files (a clean clone's), so that the build leaves nothing in the checkout
src=.
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  src="$tmp/src"
  mkdir "$src"
  git archive HEAD | tar -x -C "$src"
fi
python -m pip wheel -q --no-deps "$src" -w "$tmp/dist"
python -m venv "$tmp/venv"
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
# the dependencies only: the current environment's editable hook (a .pth there) does not run from a path entry
purelib python > "$(purelib "$tmp/venv/bin/python")/ci-dependencies.pth"
"$tmp/venv/bin/python" -m pip install -q --no-deps "$tmp"/dist/*.whl

mkdir "$tmp/work"
cd "$tmp/work"
export MIXFLOW_BENCH_HOME="$tmp/home" COLUMNS=200
installed=$("$tmp/venv/bin/python" -c 'import mixflow_bench; print(mixflow_bench.__file__)')
case "$installed" in "$tmp/venv/"*) ;; *) echo "wheel check: imports $installed, not the wheel"; exit 1 ;; esac
start=$SECONDS
"$tmp/venv/bin/mixflow-bench" recipes list > recipes.txt
for recipe in "$checkout"/mixflow_bench/recipes/builtin/[!_]*.yaml; do
  name=$(basename "$recipe" .yaml)
  grep -qE "(^|[^A-Za-z0-9_.-])${name}([^A-Za-z0-9_.-]|$)" recipes.txt || {
    echo "wheel check: recipes list lacks $name"; cat recipes.txt; exit 1; }
done
"$tmp/venv/bin/mixflow-bench" reproduce tiny-digits > reproduce.txt 2>&1 || { cat reproduce.txt; exit 1; }
"$tmp/venv/bin/mixflow-bench" table --produced-only > table.txt
grep -q "1 result record(s) from runs" table.txt || { echo "wheel check: table does not show the run"; cat table.txt; exit 1; }
echo "wheel check: the installed wheel lists every recipe, reproduces tiny-digits and tables it in $((SECONDS - start)) s"
