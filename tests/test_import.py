"""`import softtopk` stays light: it loads no module beyond torch (no dynamo, triton, numpy extras)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import torch
before = set(sys.modules)
import softtopk
print(sorted(m for m in set(sys.modules) - before if not m.startswith("softtopk")))
"""


def test_import_loads_nothing_beyond_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
