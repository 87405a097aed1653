"""On-disk cache for data sets that are derived on first use (WordNet features, rendered glyphs)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from softtopk_experiments.data.splits import Splits
from softtopk_experiments.files import write_atomic


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """`cache_dir`, else `$SOFTTOPK_CACHE`, else `~/.cache/softtopk`."""
    if cache_dir is None:
        cache_dir = os.environ.get("SOFTTOPK_CACHE") or "~/.cache/softtopk"
    return Path(cache_dir).expanduser()


def cached(name: str, params: dict, build: Callable[[], Splits],
           cache_dir: Path | str | None = None) -> Splits:
    """The `Splits` stored for `(name, params)` under the cache root, or `build()`'s result, stored.

    The file is `<root>/<name>-<hash of params>.pt`, written atomically (`runfiles.write_atomic`), so
    a crash never leaves half a file. An unreadable cache file is rebuilt.
    """
    root = cache_root(cache_dir)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]
    path = root / f"{name}-{key}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            names = stored["class_names"]
            return Splits(**{**stored, "class_names": None if names is None else tuple(names)})
        except Exception:  # an unreadable cache file, whatever the cause, is rebuilt
            pass
    splits = build()
    root.mkdir(parents=True, exist_ok=True)
    names = splits.class_names
    write_atomic(path, lambda f: torch.save({**vars(splits), "class_names": None if names is None
                                             else list(names)}, f))
    return splits
