"""`python -m softtopk ...` runs the `softtopk` command line."""

from __future__ import annotations

from softtopk.experiments.cli import main

raise SystemExit(main())
