"""`python -m softtopk ...` runs the `softtopk` command line of the softtopk-experiments package, where
that is installed (the library itself has no command line)."""

from __future__ import annotations

import sys

try:
    from softtopk_experiments.cli import main
except ModuleNotFoundError as error:
    if error.name != "softtopk_experiments":
        raise
    print("softtopk: error: the command line is the softtopk-experiments package; install it from the "
          "repository with: pip install ./experiments", file=sys.stderr)
    raise SystemExit(2) from None

raise SystemExit(main())
