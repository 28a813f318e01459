"""The identity of a run's input, recorded in its store so that a resume cannot mix two catalogs.

A store records its input catalog's path/URL and, per partition (in the ``partitions/``
table), the partition's file (relative to the catalog), its size in bytes and a
modification stamp: the local mtime in ns, or what the object store gives (ETag,
LastModified, ...). The group attribute ``input_fingerprint`` adds the catalog's kind,
counts, a sha256 of its column names and a sha256 of the whole partition list, so two
stores can be compared at a glance. ``first_difference`` names the first thing that
differs, in one line, for the refusal message of a resume.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specdiff_catalog.io.paths import is_local, to_upath

if TYPE_CHECKING:
    from specdiff_catalog.io.catalog import Catalog

STAMP_KEYS = ("ETag", "etag", "md5Hash", "LastModified", "last_modified", "updated", "mtime")
"""fsspec ``info`` keys that identify a file's version, most specific first (local files use st_mtime_ns)."""


@dataclass(frozen=True)
class PartitionSource:
    """One input partition as the store records it.

    norder, npix: HEALPix order and pixel (None for a plain Parquet file); n_rows: objects;
    file: its file relative to the catalog ("" unknown); size: bytes (-1 unknown);
    stamp: modification stamp ("" unknown).
    """

    norder: int | None
    npix: int | None
    n_rows: int
    file: str = ""
    size: int = -1
    stamp: str = ""

    @property
    def label(self) -> str:
        """ "Norder=3/Npix=425", or the file name of a plain Parquet partition."""
        if self.norder is not None and self.npix is not None and self.norder >= 0:
            return f"Norder={self.norder}/Npix={self.npix}"
        return self.file or "(no file)"


def catalog_url(root: Any) -> str:
    """The catalog's identity: an absolute local path, or the URL as given."""
    return str(Path(to_upath(root).path).absolute()) if is_local(root) else str(root)


def partition_sources(catalog: Catalog) -> list[PartitionSource]:
    """Every partition of ``catalog`` (catalog order) with its file's size and stamp.

    One ``stat`` per local file; for a URL catalog one recursive listing of the catalog
    (``fs.find(detail=True)``), then ``fs.info`` for anything the listing did not give.
    """
    stats = _file_stats([p.path for p in catalog.partitions], catalog.root)
    root = str(catalog.root).rstrip("/")
    return [
        PartitionSource(
            p.order,
            p.pixel,
            int(p.n_rows),
            str(p.path).removeprefix(root).lstrip("/") or str(p.path),
            *stats[i],
        )
        for i, p in enumerate(catalog.partitions)
    ]


def input_fingerprint(catalog: Catalog, sources: Sequence[PartitionSource]) -> dict[str, Any]:
    """The ``input_fingerprint`` attribute: catalog (absolute path or URL), kind, n_partitions,
    n_rows, columns_sha256 (of the column names in order), partitions_sha256 (of every
    PartitionSource)."""
    return {
        "catalog": catalog_url(catalog.root),
        "kind": catalog.kind,
        "n_partitions": len(sources),
        "n_rows": int(sum(s.n_rows for s in sources)),
        "columns_sha256": _sha256(list(catalog.columns)),
        "partitions_sha256": _sha256([astuple(s) for s in sources]),
    }


def first_difference(
    recorded: Sequence[PartitionSource],
    given: Sequence[PartitionSource],
    recorded_fingerprint: dict[str, Any] | None,
    given_fingerprint: dict[str, Any] | None,
) -> str | None:
    """One line naming the first difference between a store's input and this run's, or None.

    Order: catalog path/URL, partition count, each partition's pixel, row count, file,
    size and stamp, then the column names. Fingerprints are None for a store made without
    one (a library call with bare partition tuples): then only the partitions are compared.
    """
    old, new = recorded_fingerprint or {}, given_fingerprint or {}
    if old.get("catalog") != new.get("catalog"):
        return f"input catalog {new.get('catalog')} != {old.get('catalog')} recorded"
    if len(recorded) != len(given):
        return f"the input has {len(given)} partitions, the store was made for {len(recorded)}"
    for was, now in zip(recorded, given, strict=True):
        if (was.norder, was.npix) != (now.norder, now.npix):
            return f"partition {now.label} where the store has {was.label}"
        for what, a, b in (
            ("rows", now.n_rows, was.n_rows),
            ("file", now.file, was.file),
            ("file size", now.size, was.size),
            ("file modification stamp", now.stamp, was.stamp),
        ):
            if a != b:
                return f"partition {now.label}: {what} {a} != {b} recorded"
    if old.get("columns_sha256") != new.get("columns_sha256"):
        return "the catalog's columns differ from those recorded"
    return None


def _file_stats(paths: Sequence[Any], root: Any) -> list[tuple[int, str]]:
    """(size in bytes, stamp) of each file; (-1, "") where the filesystem cannot say."""
    if all(is_local(p) for p in paths):
        return [_local_stat(to_upath(p).path) for p in paths]
    upath = to_upath(root)
    fs = upath.fs
    try:
        listing = fs.find(upath.path, detail=True)
    except (OSError, NotImplementedError, ValueError):
        listing = {}
    stats = []
    for path in paths:
        key = to_upath(path).path
        info = listing.get(key) or listing.get(key.lstrip("/")) or fs.info(key)
        stamp = next((str(info[k]) for k in STAMP_KEYS if info.get(k) is not None), "")
        stats.append((int(info.get("size", -1) if info.get("size") is not None else -1), stamp))
    return stats


def _local_stat(path: str) -> tuple[int, str]:
    st = os.stat(path)
    return int(st.st_size), str(st.st_mtime_ns)


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()
