"""One writer per output store: an ownership marker beside the store, held for a whole ``run``.

The marker is the file ``OUT.zarr.lock`` next to ``OUT.zarr`` (a sibling, so that it
exists before the store does and survives the store's replacement). It holds JSON:
host, pid, the process's start time, when the run started, a random token and the
command line. A second ``run`` on the same store is refused with a one-line
``StoreLockedError`` naming the holder. A marker left by a process that is gone (same
host, pid not running or running another program since) is stale: it is taken over,
with a message. A marker from another host cannot be checked and is never taken over.

Local files are created atomically (written to a temporary file, then hard-linked to
the marker's name, which fails when it exists). On object stores there is no atomic
create-if-absent in fsspec: the marker is written and read back, which narrows the race
to the time between the two; there the lock is advisory.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
from upath import UPath

from specdiff_catalog.io.paths import is_local, to_upath

SUFFIX = ".lock"


class StoreLockedError(ValueError):
    """Another live run holds the store's lock; the message names it."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a store: host, pid, process_start (s since the epoch, psutil's create_time),
    started (UTC ISO 8601), token (random, this acquisition's), command (its command line)."""

    host: str
    pid: int
    process_start: float
    started: str
    token: str
    command: str

    @classmethod
    def me(cls) -> LockHolder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            process_start=psutil.Process().create_time(),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
            command=" ".join(sys.argv),
        )

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}"

    def alive(self) -> bool | None:
        """Whether the holding process still runs: None when it is on another host (unknown)."""
        if self.host != socket.gethostname():
            return None
        try:
            return abs(psutil.Process(self.pid).create_time() - self.process_start) < 1.0
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return True


def lock_path(store: UPath) -> UPath:
    """``OUT.zarr.lock`` beside ``OUT.zarr``."""
    return store.parent / f"{store.name}{SUFFIX}"


def read_lock(store: Any, storage_options: dict[str, Any] | None = None) -> LockHolder | None:
    """The holder recorded beside ``store``, or None when there is no (readable) marker."""
    return _read(lock_path(to_upath(store, storage_options)))


@contextmanager
def store_lock(
    store: Any,
    storage_options: dict[str, Any] | None = None,
    *,
    notify: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
) -> Iterator[LockHolder]:
    """Hold the lock of ``store`` for the ``with`` block; ``notify`` hears of a stale lock taken over.

    Raises StoreLockedError when another live run (or a run on another host) holds it.
    """
    target = to_upath(store, storage_options)
    path = lock_path(target)
    me = LockHolder.me()
    _acquire(target, path, me, notify)
    try:
        yield me
    finally:
        _remove_if(path, me.token)


def _read(path: UPath) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _acquire(store: UPath, path: UPath, me: LockHolder, notify: Callable[[str], None]) -> None:
    for _ in range(3):
        if _create(path, me):
            return
        holder = _read(path)
        if holder is None:
            if path.exists():
                raise StoreLockedError(
                    f"{path}: an unreadable lock file; remove it if no run is writing {store}"
                )
            continue  # released between the two calls
        alive = holder.alive()
        if alive is not False:
            where = "" if alive else "; it is on another host: remove the lock file if that run is gone"
            raise StoreLockedError(
                f"{store} is being written by another run ({holder.describe()}{where}; lock file {path})"
            )
        notify(f"note: taking over the stale lock of {store} from a run that is gone ({holder.describe()})")
        _remove_if(path, holder.token)
    raise StoreLockedError(f"{path}: could not take the lock (other runs keep taking it)")


def _create(path: UPath, me: LockHolder) -> bool:
    """Write the marker unless one exists; True when it is ours."""
    text = json.dumps(asdict(me))
    if is_local(path):
        local = os.path.abspath(to_upath(path).path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        temp = f"{local}.{me.token}"
        with open(temp, "w") as fh:
            fh.write(text)
        try:
            os.link(temp, local)  # atomic: fails when the marker exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temp)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    holder = _read(path)
    return holder is not None and holder.token == me.token


def _remove_if(path: UPath, token: str) -> None:
    """Remove the marker when it holds ``token``. Locally the marker is first renamed to a
    name of this process's own (atomic), so a marker another run wrote meanwhile is put back."""
    if not is_local(path):
        holder = _read(path)
        if holder is not None and holder.token == token:
            with suppress(FileNotFoundError):
                path.unlink()
        return
    local = os.path.abspath(to_upath(path).path)
    aside = f"{local}.{uuid.uuid4().hex}.removing"
    try:
        os.rename(local, aside)
    except FileNotFoundError:
        return
    holder = _read(to_upath(aside))
    if holder is None or holder.token == token:
        os.unlink(aside)
        return
    with suppress(FileExistsError):
        os.link(aside, local)  # someone else's: put it back unless yet another one is there
    os.unlink(aside)
