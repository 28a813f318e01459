"""Paths and URLs at the package's edges: local paths and fsspec URLs (file://, memory://, s3://, ...).

Every reader and writer of user data takes ``str | os.PathLike`` or a URL plus
``storage_options`` and turns it into a ``UPath`` here, so that a scheme nobody
implements, or one whose filesystem package is not installed, is a one-line
``PathError`` before anything is read or written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import fsspec
from upath import UPath

PathLike = str | os.PathLike[str] | UPath
"""What a user may pass where the package reads or writes data."""


class PathError(ValueError):
    """A path or URL the package cannot use; the message names it and the reason."""


def to_upath(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> UPath:
    """``path`` as a UPath (a plain local path stays a local path).

    storage_options: passed to the URL's fsspec filesystem (e.g. ``{"anon": True}`` for
    s3://). Raises PathError when the scheme is unknown or its filesystem package (s3fs,
    gcsfs, ...) is not installed.
    """
    options = dict(storage_options or {})
    protocol = path.protocol if isinstance(path, UPath) else fsspec.utils.get_protocol(os.fspath(path))
    if protocol not in ("", "file", "local"):
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as err:
            raise PathError(
                f"{path}: the {protocol}:// filesystem needs a package that is not installed ({err})"
            ) from err
        except ValueError as err:
            raise PathError(
                f"{path}: unknown URL scheme {protocol!r} (no fsspec filesystem implements it)"
            ) from err
    if isinstance(path, UPath) and not options:
        return path
    upath = UPath(path, **options)
    return upath


def is_local(path: PathLike) -> bool:
    """True for a path on the local filesystem (a plain path or file://)."""
    return to_upath(path).protocol in ("", "file", "local")


def _umask() -> int:
    """The process's umask: read from /proc on Linux, since setting it to read it back
    (the portable fallback below) briefly opens every file other threads create."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""The mode ``open(path, "w")`` gives a new file under the umask the process started with."""


def write_atomic(path: Path, write: Callable[[Path], object], suffix: str = ".tmp") -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it into place.

    A reader never sees a half-written file and a crash leaves the old one. The temporary
    file (``tempfile.mkstemp``, unique per writer; ``suffix`` for writers that append their
    own, like ``np.savez``) gets the mode ``FILE_MODE`` before the rename, since mkstemp's
    0600 would otherwise make a model directory or cache written by one user unreadable by
    the group the umask lets read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
