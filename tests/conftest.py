from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The original difftopk imports torch_sparse for its sparse networks; without the compiled package,
# a small stand-in makes those networks usable as a numerical reference.
if importlib.util.find_spec("torch_sparse") is None:
    sys.path.insert(0, str(Path(__file__).parent / "standins"))
