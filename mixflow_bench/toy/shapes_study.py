"""The GPU shapes study's former module path, kept so that ``python -m mixflow_bench.toy.shapes_study`` (the
command of the earlier runs in results/shapes-sit-s/README.md) still runs it: see
:mod:`mixflow_bench.experiments.shapes`."""

import sys

from mixflow_bench.experiments.shapes import main

if __name__ == "__main__":
    sys.exit(main())
