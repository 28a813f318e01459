"""An on-disk cache for arrays the mock derives from static inputs (resampled SPS grids, completeness tables).

Where: ``$SPECDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/specdiff-catalog``, else
``~/.cache/specdiff-catalog``. One ``.npz`` per entry (no pickle), named by the sha256 of its
key: a JSON-able dict naming everything the arrays depend on (package versions, grid
sampling, model parameters). The key is stored in the file and compared on reading, so a
hash collision or a stale file is recomputed, as is an unreadable one. Files are written to a
temporary name in the same directory and renamed into place: concurrent or interrupted
writers never leave a partial file under the final name. Deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from specdiff_catalog.io.paths import write_atomic

_KEY = "__key__"


def cache_dir() -> Path:
    """The directory of the mock's cache files (not created here)."""
    if os.environ.get("SPECDIFF_CACHE_DIR"):
        return Path(os.environ["SPECDIFF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "specdiff-catalog"


def _path(name: str, key: dict[str, Any]) -> tuple[Path, str]:
    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir() / f"{name}-{digest}.npz", text


def _read(path: Path, text: str) -> dict[str, np.ndarray] | None:
    """The arrays of ``path`` if it exists, is a readable npz and carries key ``text``; else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data[_KEY]) != text:
                return None
            return {k: data[k] for k in data.files if k != _KEY}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write(path: Path, text: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the npz atomically (``io.paths.write_atomic``)."""
    payload: dict[str, Any] = {_KEY: np.array(text), **arrays}
    write_atomic(path, lambda tmp: np.savez(tmp, allow_pickle=False, **payload), suffix=".npz")


def cached_arrays(
    name: str, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays ``compute()`` returns for ``key``, read from the cache when an entry exists.

    name: a readable prefix of the file name. A cache that cannot be written (read-only home,
    full disk) costs a warning and the recomputation next time, nothing else.
    """
    path, text = _path(name, key)
    found = _read(path, text)
    if found is not None:
        return found
    arrays = compute()
    try:
        _write(path, text, arrays)
    except OSError as err:
        warnings.warn(f"could not write the mock cache {path}: {err}", stacklevel=2)
    return arrays
