"""The Zarr v3 output store of ``run``: shard-aligned partition regions, status, resume, provenance.

One group, one row per input object in catalog order (see docs/formats.md; the
per-object columns, with their units and long names, are ``io.columns.output_columns``)::

    OUT.zarr/   attrs: format, format_version, state, store_uuid, layout, model, config,
                       input, input_fingerprint, ... (JSON-encoded where netCDF needs it)
      object_id, _healpix_29 (object,) int64      ra, dec (object,) float64
      valid (object,) uint8 (0 = padding)         flags (object,) uint16 (Flag bits)
      quantile (quantile,) float64                z_quantiles (object, quantile) float32
      z_median, z_mode, z_mean, z_std (object,) float32
      latent, latent_std (object, latent_dim) float32
      z_samples (object, sample) float16
      partitions/  norder, npix, start, stop, n_rows, file, file_size, file_stamp,
                   status, error   (partition,)

Partition i owns the rows ``start:stop`` (whole shards); its objects are the first
``n_rows`` of them, the rest is padding (valid = 0, flags = PADDING). No two
partitions share a chunk or a shard, so processes may write different partitions at
once. ``write_partition`` checks every array first, then writes valid = 0, the arrays,
valid = 1 and the status, in that order: a writer killed anywhere leaves the partition
pending, and readers take rows of done partitions only.

A store is created whole or not at all: locally in a temporary sibling renamed into
place, on object stores (no atomic rename) with ``state = "creating"`` until the last
write sets ``"ready"``; ``open_store`` refuses a store that is not ready. Each store has
a random ``store_uuid``; a writer holding a ``StoreRef`` checks it before every write,
so a run whose store was replaced under it fails instead of writing into the new one.
Paths are local paths or fsspec URLs (``io.paths.to_upath``) with ``storage_options``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import psutil
import zarr
from upath import UPath
from zarr.abc.store import Store

from specdiff_catalog import __version__
from specdiff_catalog.flags import NO_RESULT, Flag
from specdiff_catalog.io.columns import Column, output_columns
from specdiff_catalog.io.fingerprint import PartitionSource, first_difference
from specdiff_catalog.io.paths import PathLike, is_local, to_upath

if TYPE_CHECKING:
    import xarray as xr

FORMAT = "specdiff-catalog output"
FORMAT_VERSION = 2
PARTITIONS = "partitions"
CREATING, READY = "creating", "ready"
COORDINATE = "object_id"
"""The per-object coordinate (CF ``coordinates`` attribute of every other per-object array)."""
JSON_ATTRIBUTES = "json_attributes"
"""Group attribute naming (space-separated) the attributes stored as JSON strings."""
SHARD_BOUNDS = (64, 65536)
MAX_PADDING = 0.10
MAX_SHARDS = 1 << 17
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:creating|replaced)-(?P<host>[^/]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
PARTITION_ARRAYS = ("norder", "npix", "start", "stop", "n_rows", "file", "file_size", "file_stamp")


class PartitionStatus(enum.IntEnum):
    """The uint8 ``partitions/status`` values; a partition's status is written last."""

    PENDING = 0
    DONE = 1
    FAILED = 2

    @property
    def label(self) -> str:
        """'pending', 'done' or 'failed'."""
        return self.name.lower()


COMPATIBILITY_KEYS = ("model", "config")
"""Attributes that must match for ``run`` to resume into an existing store."""


@dataclass(frozen=True)
class StoreLayout:
    """What the store holds and how it is cut.

    quantiles: PDF quantile levels, strictly increasing, strictly inside (0, 1).
    latent_size: width of ``latent`` / ``latent_std`` (0: no latent arrays).
    n_samples_saved: width of ``z_samples`` (0: not stored).
    shard_rows: rows per shard, the unit a partition owns (regions start at multiples of it).
    chunk_rows: rows per chunk inside a shard, a divisor of shard_rows (None: = shard_rows).
    """

    quantiles: tuple[float, ...]
    latent_size: int
    n_samples_saved: int = 0
    shard_rows: int = 4096
    chunk_rows: int | None = None

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=np.float64)
        if q.ndim != 1 or q.size == 0 or not np.all((q > 0) & (q < 1)) or np.any(np.diff(q) <= 0):
            raise ValueError(f"quantile levels must be strictly increasing and inside (0, 1), got {list(q)}")
        object.__setattr__(self, "quantiles", tuple(float(v) for v in q))
        if self.latent_size < 0 or self.n_samples_saved < 0:
            raise ValueError("latent_size and n_samples_saved must be >= 0")
        if self.shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {self.shard_rows}")
        chunk_rows = self.shard_rows if self.chunk_rows is None else self.chunk_rows
        object.__setattr__(self, "chunk_rows", chunk_rows)
        if chunk_rows < 1 or self.shard_rows % chunk_rows:
            raise ValueError(f"chunk_rows ({chunk_rows}) must divide shard_rows ({self.shard_rows})")

    @property
    def rows_per_chunk(self) -> int:
        """chunk_rows, resolved (shard_rows when not given)."""
        return self.shard_rows if self.chunk_rows is None else self.chunk_rows

    def columns(self) -> dict[str, Column]:
        """The per-object arrays of this layout (``io.columns.output_columns``)."""
        return output_columns(len(self.quantiles), self.latent_size, self.n_samples_saved)

    def content(self) -> tuple[Any, ...]:
        """What the arrays mean (quantiles, widths), without how they are cut into shards."""
        return self.quantiles, self.latent_size, self.n_samples_saved

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"quantiles": list(self.quantiles)}


class StoreMismatchError(ValueError):
    """An existing store was made for another catalog, layout, model or configuration."""


class IncompleteStoreError(StoreMismatchError):
    """A store whose creation was interrupted: ``run`` recreates it, readers refuse it."""


class StoreReplacedError(ValueError):
    """The store a writer opened was removed or replaced by another one (another store_uuid)."""


class NotDoneError(ValueError):
    """A reader asked for complete results from a store with failed or pending partitions."""


class PartitionDataError(ValueError):
    """A partition's results break the output row's spec; nothing of it was written."""


RowCounts = Sequence[int] | np.ndarray
"""Rows of each partition: a list or an integer array."""


def regions(n_rows: RowCounts, shard_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each partition's rows: consecutive, each a whole number of shards."""
    sizes = -(-np.asarray(n_rows, dtype=np.int64) // shard_rows) * shard_rows
    stop = np.cumsum(sizes, dtype=np.int64)
    return stop - sizes, stop


def padding(n_rows: RowCounts, shard_rows: int) -> int:
    """Padding rows the partitions ``n_rows`` need with ``shard_rows`` rows per shard."""
    n = np.asarray(n_rows, dtype=np.int64)
    return int((-(-n // shard_rows) * shard_rows - n).sum())


def shard_files(n_rows: RowCounts, shard_rows: int) -> int:
    """Shards (files per array) the partitions ``n_rows`` take with ``shard_rows`` rows per shard."""
    return int((-(-np.asarray(n_rows, dtype=np.int64) // shard_rows)).sum())


def choose_shard_rows(
    n_rows: RowCounts,
    *,
    max_padding: float = MAX_PADDING,
    bounds: tuple[int, int] = SHARD_BOUNDS,
    max_shards: int = MAX_SHARDS,
) -> int:
    """Rows per shard for partitions of ``n_rows`` objects: a power of two within ``bounds``.

    The largest one whose padding stays within ``max_padding`` of the objects; raised, when
    that one gives an array more than ``max_shards`` shard files (or one per partition,
    if that is more), to the smallest that does not, at the price of more padding.
    docs/formats.md has the numbers for catalogs from 2,000 to 3e9 objects.
    """
    total = int(np.sum(n_rows, dtype=np.int64))
    lo, hi = (int(b).bit_length() - 1 for b in bounds)
    sizes = [1 << k for k in range(hi, lo - 1, -1)]  # largest first
    fits = [s for s in sizes if total and padding(n_rows, s) <= max_padding * total]
    limit = max(max_shards, len(n_rows))
    few = [s for s in sizes if shard_files(n_rows, s) <= limit]
    return max(fits[0] if fits else sizes[-1], few[-1] if few else sizes[0])


@dataclass(frozen=True)
class StoreRef:
    """What a worker needs to write into a store: its URL, storage options and store_uuid."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""

    def open(self) -> OutputStore:
        """The store, checked to be the one this ref was made from (StoreReplacedError otherwise)."""
        try:
            store = open_store(self.url, storage_options=self.storage_options)
        except (FileNotFoundError, StoreMismatchError) as err:
            raise StoreReplacedError(f"{self.url}: the store this run writes was removed ({err})") from err
        store.check_identity(self.uuid)
        return store


def create_store(
    path: PathLike,
    partitions: Sequence[PartitionSource | tuple[int | None, int | None, int]],
    layout: StoreLayout,
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> OutputStore:
    """Create the store for ``partitions`` (PartitionSource, or (norder, npix, n_rows), in catalog order).

    ``attrs`` (JSON-serialisable) become the group attributes: model, config, input,
    ``input_fingerprint`` (``io.fingerprint``), command line...; ``software_version`` and
    ``created`` (UTC ISO 8601) are filled in when absent. An existing store is resumed
    (returned as it is, keeping its shard size) when its input (catalog, partitions,
    files), layout, model and config match, refused otherwise with the first difference;
    ``overwrite=True`` replaces it. Only a store this package made, holding nothing but
    its own arrays, or an empty directory, is ever removed; an interrupted creation is
    recreated without ``overwrite``.
    """
    loc = _location(path, storage_options)
    sources = [p if isinstance(p, PartitionSource) else PartitionSource(*p) for p in partitions]
    user_attrs = json.loads(_to_json(attrs, "store attributes"))
    _remove_leftovers(loc)
    state = _probe(loc)
    if state == READY and not overwrite:
        store = open_store(loc)
        store.check_resume(sources, layout, user_attrs)
        return store
    if state in (READY, CREATING):
        _check_removable(loc)
    if is_local(loc):
        os.makedirs(loc.parent.path, exist_ok=True)
        temp = loc.parent / f".{loc.name}.creating-{_owner_tag()}"
        _build(temp, sources, layout, user_attrs)
        _swap_into_place(temp, loc, replace=state in (READY, CREATING))
    else:
        if state in (READY, CREATING):
            loc.fs.rm(loc.path, recursive=True)
        _build(loc, sources, layout, user_attrs)
    return open_store(loc)


def _build(
    target: UPath, sources: Sequence[PartitionSource], layout: StoreLayout, user_attrs: dict[str, Any]
) -> None:
    """Write a whole store at ``target``: state "creating" first, "ready" + consolidated metadata last."""
    table = _partition_table(sources)
    start, stop = regions(table["n_rows"], layout.shard_rows)
    attrs = {
        "software_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **user_attrs,
        "Conventions": "CF-1.10",
        "title": "specdiff-catalog photo-z PDFs and spectral latents",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "store_uuid": uuid.uuid4().hex,
        "layout": layout.to_dict(),
        "state": CREATING,
    }
    group = zarr.open_group(_zarr_store(target), mode="w-", attributes=_encode_attrs(attrs))
    _create_object_arrays(group, layout, int(stop[-1]) if len(stop) else 0)
    _create_partition_table(group, table, start, stop)
    group.attrs.put(_encode_attrs(attrs | {"state": READY}))
    _consolidate(target)


def _create_object_arrays(group: zarr.Group, layout: StoreLayout, n_objects: int) -> None:
    """The per-object arrays, sharded along ``object``, and the ``quantile`` coordinate."""
    for name, column in layout.columns().items():
        tail = column.shape_tail
        coordinates = {} if name == COORDINATE else {"coordinates": COORDINATE}
        # Unwritten rows read as "no result": NaN / -1, valid = 0, no flags.
        group.create_array(
            name,
            shape=(n_objects, *tail),
            dtype=column.dtype,
            chunks=(layout.rows_per_chunk, *tail),
            shards=(layout.shard_rows, *tail),
            fill_value=0 if name == "flags" else column.fill,
            dimension_names=column.dims,
            attributes=column.attributes() | coordinates,
        )
    group.create_array(
        "quantile",
        data=np.asarray(layout.quantiles, dtype=np.float64),
        dimension_names=("quantile",),
        attributes={"long_name": "PDF quantile level", "units": "1"},
    )


PARTITION_LONG_NAMES = {
    "norder": "HEALPix order of the input partition (-1: a plain Parquet file)",
    "npix": "HEALPix pixel of the input partition (-1: a plain Parquet file)",
    "start": "first row of the partition's region",
    "stop": "row after the partition's region (start + n_rows + padding)",
    "n_rows": "objects in the partition",
    "file": "the partition's file, relative to the input catalog",
    "file_size": "size of the partition's file when the store was made (bytes, -1 unknown)",
    "file_stamp": "modification stamp of the partition's file (mtime ns or object-store ETag)",
}


def _create_partition_table(
    group: zarr.Group, table: pd.DataFrame, start: np.ndarray, stop: np.ndarray
) -> None:
    """``partitions/``: the input's partitions and their regions (fixed) and status, error
    (one chunk per partition)."""
    parts = group.create_group(PARTITIONS)
    values = {**{c: table[c] for c in table.columns}, "start": start, "stop": stop}
    for name in PARTITION_ARRAYS:
        column = np.asarray(values[name])
        attributes: dict[str, Any] = {"long_name": PARTITION_LONG_NAMES[name]}
        if column.dtype.kind in "iu":
            parts.create_array(
                name,
                data=column.astype(np.int64),
                dimension_names=("partition",),
                attributes=attributes,
            )
        else:
            _string_array(parts, name, column, attributes, chunks=None)
    # One chunk per partition: writers of different partitions never touch the same file.
    parts.create_array(
        "status",
        shape=(len(table),),
        dtype="uint8",
        chunks=(1,),
        fill_value=int(PartitionStatus.PENDING),
        dimension_names=("partition",),
        attributes={
            "long_name": "partition status",
            "flag_values": [int(s) for s in PartitionStatus],
            "flag_meanings": " ".join(s.label for s in PartitionStatus),
        },
    )
    _string_array(
        parts, "error", np.full(len(table), "", dtype=object), {"long_name": "why a partition failed"}, (1,)
    )


def _string_array(
    group: zarr.Group, name: str, values: np.ndarray, attributes: dict[str, Any], chunks: tuple[int] | None
) -> None:
    array = group.create_array(
        name,
        shape=(len(values),),
        dtype=str,
        chunks=chunks or "auto",
        fill_value="",
        dimension_names=("partition",),
        attributes=attributes,
    )
    if len(values):
        array[:] = np.asarray(values, dtype=object)


def open_store(
    path: PathLike, mode: Literal["r", "r+"] = "r+", storage_options: Mapping[str, Any] | None = None
) -> OutputStore:
    """Open an existing output store for reading and writing partitions (mode "r": reading only).

    Raises FileNotFoundError when there is none (naming an interrupted creation's leftover),
    IncompleteStoreError for a store whose creation did not finish, StoreMismatchError for
    a Zarr group that is not an output store.
    """
    loc = _location(path, storage_options)
    if not (loc / "zarr.json").exists():
        leftover = _leftover_for(loc)
        if leftover:
            raise FileNotFoundError(
                f"{loc}: no output store: its creation was interrupted ({leftover} left behind; "
                "the next `run` removes it)"
            )
        raise FileNotFoundError(f"{loc}: no output store here (no zarr.json)")
    group = zarr.open_group(_zarr_store(loc, read_only=mode == "r"), mode=mode)
    attrs = _decode_attrs(dict(group.attrs))
    if attrs.get("format") != FORMAT:
        raise StoreMismatchError(f"{loc}: a Zarr group, but not a {FORMAT} store")
    if _state(attrs, PARTITIONS in group) != READY:
        raise IncompleteStoreError(
            f"{loc}: an incomplete output store (its creation was interrupted); `run` again recreates it"
        )
    return OutputStore(loc, group)


def open_dataset(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The results of an output store as an xarray Dataset: the object rows of done partitions only.

    No padding rows, no rows of failed or pending partitions (a warning says how many
    objects are left out; ``valid`` is 1 on every row kept); CF-decoded,
    lazily loaded (dask), with ``object_id`` as the ``object`` coordinate and the quantile
    levels as the ``quantile`` coordinate.
    ``flags`` carries CF ``flag_masks`` / ``flag_meanings``; group attributes that are
    not netCDF types are JSON strings (their names in ``json_attributes``).
    """
    import xarray as xr

    store = open_store(path, mode="r", storage_options=storage_options)
    left_out = store.require_done(partial=True)
    if left_out:
        warnings.warn(
            f"{store.path}: {left_out} objects of failed or pending partitions are not in the dataset",
            stacklevel=2,
        )
    keep = np.concatenate(
        [np.zeros(0, dtype=bool)]
        + [store.result_mask(rows, block["valid"]) for rows, block in store.blocks(["valid"])]
    )
    ds = xr.open_zarr(_zarr_store(store.path, read_only=True), consolidated=True)
    return ds.isel(object=np.flatnonzero(keep))


class OutputStore:
    """An open output store: partition table, region writes, status, resume and result rows."""

    def __init__(self, path: UPath, group: zarr.Group):
        self.path = path
        self.group = group
        self._attrs = _decode_attrs(dict(group.attrs))
        layout = dict(self._attrs["layout"])
        self.layout = StoreLayout(**{**layout, "quantiles": tuple(layout["quantiles"])})
        self._start, self._stop, self._n_rows = (
            self.read(f"{PARTITIONS}/{n}") for n in ("start", "stop", "n_rows")
        )
        self._status: np.ndarray | None = None

    def array(self, name: str) -> zarr.Array:
        """The Zarr array ``name`` ("partitions/status" for the partition table's)."""
        node = self.group[name]
        if not isinstance(node, zarr.Array):
            raise StoreMismatchError(f"{self.path}: {name} is not an array")
        return node

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Array ``name`` (all of it, or the rows ``rows``: a slice or sorted indices) as numpy."""
        array = self.array(name)
        if rows is None:
            return np.asarray(array[...])
        if isinstance(rows, slice):
            return np.asarray(array[rows])
        return np.asarray(array.get_orthogonal_selection((rows,) + (slice(None),) * (array.ndim - 1)))

    @property
    def attrs(self) -> dict[str, Any]:
        """The group attributes, JSON-encoded ones decoded."""
        return dict(self._attrs)

    @property
    def uuid(self) -> str:
        """The store's ``store_uuid`` ("" for a format-1 store)."""
        return str(self._attrs.get("store_uuid", ""))

    def ref(self) -> StoreRef:
        """What a worker process needs to open this very store (``StoreRef.open``)."""
        if is_local(self.path):  # absolute: a worker may run in another directory
            return StoreRef(os.path.abspath(self.path.path), {}, self.uuid)
        return StoreRef(str(self.path), dict(self.path.storage_options), self.uuid)

    def __len__(self) -> int:
        """Number of partitions."""
        return len(self._start)

    def partitions(self) -> pd.DataFrame:
        """One row per partition (index = partition index): norder, npix (-1 when not HEALPix),
        start, stop (its rows, shard-aligned), n_rows (objects; the rest is padding), file,
        file_size, file_stamp (the input file as recorded; "", -1 in a format-1 store),
        status ('pending' | 'done' | 'failed'), error (message of a failed partition)."""
        frame = pd.DataFrame({name: self.read(f"{PARTITIONS}/{name}") for name in self._table_arrays()})
        for name, empty in (("file", ""), ("file_size", -1), ("file_stamp", "")):
            if name not in frame:
                frame[name] = empty
        frame["file"] = frame["file"].astype(object)
        frame["file_stamp"] = frame["file_stamp"].astype(object)
        labels = {int(s): s.label for s in PartitionStatus}
        frame["status"] = pd.Series(self.read(f"{PARTITIONS}/status")).map(labels)
        frame["error"] = np.asarray(self.read(f"{PARTITIONS}/error"), dtype=object)
        frame.index.name = "partition"
        return frame

    def sources(self) -> list[PartitionSource]:
        """The input partitions as recorded (``io.fingerprint.PartitionSource``)."""
        frame = self.partitions()
        return [
            PartitionSource(
                None if k < 0 else int(k), None if p < 0 else int(p), int(n), str(f), int(s), str(t)
            )
            for k, p, n, f, s, t in frame[
                ["norder", "npix", "n_rows", "file", "file_size", "file_stamp"]
            ].itertuples(index=False)
        ]

    def pending(self) -> list[int]:
        """Indices of the partitions not done (pending or failed), in catalog order."""
        status = self.read(f"{PARTITIONS}/status")
        return [int(i) for i in np.flatnonzero(status != PartitionStatus.DONE)]

    def region(self, index: int) -> slice:
        """The rows partition ``index`` owns (whole shards, padding included)."""
        return slice(int(self._start[index]), int(self._stop[index]))

    def write_partition(self, index: int, columns: Mapping[str, np.ndarray]) -> None:
        """Write partition ``index``'s results, then mark it done.

        columns: every per-object array of the layout except ``valid``, each with
        n_rows rows ((n_rows,) or (n_rows, width)). Every array is checked before anything
        is written (PartitionDataError: names, shapes, dtypes, integer ranges, flags, and
        finite model outputs in every row whose flags do not say why not). Then, each
        whole shards at a time: valid = 0 over the region, the arrays (padded: flags =
        PADDING, NaN / -1 elsewhere), valid = 1 for the objects, and the status last.
        The store's identity (``check_identity``) is checked before the first write and
        again before ``valid = 1``: a store replaced meanwhile raises StoreReplacedError and
        never gets this partition's status.
        """
        region = self.region(index)
        data = self._checked(index, columns, region.stop - region.start)
        self.check_identity()
        self.array("valid")[region] = np.zeros(region.stop - region.start, dtype=np.uint8)
        for name, values in data.items():
            self.array(name)[region] = values
        valid = np.zeros(region.stop - region.start, dtype=np.uint8)
        valid[: int(self._n_rows[index])] = 1
        self.check_identity()  # again: a store replaced meanwhile keeps this partition pending
        self.array("valid")[region] = valid
        self._set_status(index, PartitionStatus.DONE, "")

    def _checked(self, index: int, columns: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """Every array of partition ``index`` cast to its dtype and padded to ``size`` rows."""
        n, spec = int(self._n_rows[index]), self.layout.columns()
        where = f"{self.path} partition {index}"
        expected = set(spec) - {"valid"}
        if set(columns) != expected:
            missing, extra = sorted(expected - set(columns)), sorted(set(columns) - expected)
            raise PartitionDataError(f"{where}: missing arrays {missing}, unexpected {extra}")
        cast = {name: _cast(where, name, spec[name], columns[name], n) for name in sorted(expected)}
        flags = cast["flags"]
        if np.any(flags & np.uint16(Flag.PADDING)):
            raise PartitionDataError(f"{where}: flags: the PADDING bit is set on object rows")
        unexplained = (flags & np.uint16(NO_RESULT)) == 0
        for name in sorted(expected):
            if not spec[name].finite:
                continue
            values = cast[name]
            bad = unexplained & ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
            if bad.any():
                ids = ", ".join(str(i) for i in cast["object_id"][bad][:3])
                raise PartitionDataError(
                    f"{where}: {name} is not finite for {int(bad.sum())} objects whose flags do not say "
                    f"why (no NO_PHOTOMETRY or SAMPLER_FAILURE), e.g. object_id {ids}"
                )
        padded = {}
        for name, values in cast.items():
            padded[name] = spec[name].empty(size)
            padded[name][:n] = values
        return padded

    def mark_failed(self, index: int, message: str) -> None:
        """Record that partition ``index`` failed: its rows valid = 0, status failed (it stays in
        pending() for the next run)."""
        self.check_identity()
        region = self.region(index)
        self.array("valid")[region] = np.zeros(region.stop - region.start, dtype=np.uint8)
        self._set_status(index, PartitionStatus.FAILED, message)

    def check_identity(self, expected: str | None = None) -> None:
        """Raise StoreReplacedError unless the store at ``self.path`` is still this one
        (its ``store_uuid``, read afresh, equals ``expected`` or this object's)."""
        expected = self.uuid if expected is None else expected
        try:
            found = json.loads((self.path / "zarr.json").read_text()).get("attributes", {}).get("store_uuid")
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise StoreReplacedError(f"{self.path}: the store this run writes was removed ({err})") from err
        if found != expected:
            raise StoreReplacedError(
                f"{self.path} was replaced by another store (store_uuid {found} != {expected} of this run): "
                "another run overwrote it; nothing more is written"
            )

    def check_compatible(self, attrs: Mapping[str, Any]) -> None:
        """Refuse to resume with another model (sha256) or configuration than the store's."""
        given = json.loads(_to_json(attrs, "store attributes"))
        for key in COMPATIBILITY_KEYS:
            stored = self._attrs.get(key)
            if given.get(key) != stored:
                raise StoreMismatchError(
                    f"{self.path} was written with a different {key} ({_difference(stored, given.get(key))});"
                    " use another output path or overwrite"
                )

    def check_resume(
        self, sources: Sequence[PartitionSource], layout: StoreLayout, attrs: Mapping[str, Any]
    ) -> None:
        """Refuse (StoreMismatchError, one line) to resume with another input, model, config or layout."""
        if "input_fingerprint" not in self._attrs and "input_fingerprint" in attrs:
            raise StoreMismatchError(
                f"{self.path} was made by an older specdiff-catalog (format "
                f"{self._attrs.get('format_version')}) without an input fingerprint, so a resume cannot be"
                " checked; use another output path or overwrite"
            )
        diff = first_difference(
            self.sources(), sources, self._attrs.get("input_fingerprint"), attrs.get("input_fingerprint")
        )
        if diff:
            raise StoreMismatchError(
                f"{self.path} was made for another input: {diff}; use another output path or overwrite"
            )
        self.check_compatible(attrs)
        if layout.content() != self.layout.content():
            raise StoreMismatchError(
                f"{self.path} has layout {self.layout}, not {layout}; use another output path or overwrite"
            )

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add or replace store attributes (e.g. a run summary) and refresh the consolidated metadata."""
        self.check_identity()
        self._attrs.update(json.loads(_to_json(attrs, "store attributes")))
        self.group.attrs.put(_encode_attrs(self._attrs))
        _consolidate(self.path)

    def n_rows(self) -> int:
        """Rows of the per-object arrays, padding included."""
        return int(self.array("valid").shape[0])

    def blocks(
        self, names: Sequence[str], block_rows: int | None = None
    ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
        """Walk the store in row blocks: yields (rows, {name: array[rows]}) for the arrays ``names``.

        block_rows: a multiple of the shard size (default: the largest multiple <= 2**20
        rows), so every read decodes whole shards and memory stays at one block.
        """
        shard = self.layout.shard_rows
        step = max(1, (block_rows or max(shard, (1 << 20) // shard * shard)) // shard) * shard
        for start in range(0, self.n_rows(), step):
            rows = slice(start, min(start + step, self.n_rows()))
            yield rows, {name: self.read(name, rows) for name in names}

    def result_mask(self, rows: slice, valid: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: the rows that are results: valid == 1 and in a done partition.

        The partition statuses are read on the first call and kept (a consistent snapshot
        for one reading pass; open the store again to see later progress)."""
        done = np.zeros(rows.stop - rows.start, dtype=bool)
        if self._status is None:  # one file per partition: read once, a reader's snapshot
            self._status = self.read(f"{PARTITIONS}/status")
        status = self._status
        first = int(np.searchsorted(self._stop, rows.start, side="right"))
        last = int(np.searchsorted(self._start, rows.stop, side="left"))
        for i in range(first, last):
            if status[i] == PartitionStatus.DONE:
                done[
                    max(self._start[i], rows.start) - rows.start : min(self._stop[i], rows.stop) - rows.start
                ] = 1
        return done & (np.asarray(valid) == 1)

    def read_results(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The arrays ``names`` (those the store has) at the result rows (``result_mask``), in memory."""
        names = [n for n in names if n in self.group]
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for rows, block in self.blocks([*names, "valid"]):
            keep = self.result_mask(rows, block["valid"])
            for n in names:
                parts[n].append(block[n][keep])
        return {n: np.concatenate(v) if v else self.read(n, slice(0, 0)) for n, v in parts.items()}

    def require_done(self, *, partial: bool = False) -> int:
        """Objects in partitions that are not done: 0 when every partition is done.

        Raises NotDoneError naming the failed and pending partitions unless ``partial``.
        """
        parts = self.partitions()
        todo = parts[parts["status"] != PartitionStatus.DONE.label]
        left_out = int(todo["n_rows"].sum())
        if todo.empty or partial:
            return left_out
        named = "; ".join(
            f"{status}: "
            + ", ".join(_label(row) for _, row in group.head(5).iterrows())
            + (f" and {len(group) - 5} more" if len(group) > 5 else "")
            for status, group in todo.groupby("status", sort=True)
        )
        raise NotDoneError(
            f"{self.path}: {len(todo)} of {len(parts)} partitions are not done ({named}): run `run` again "
            f"to finish them, or pass --partial to use the done ones only ({left_out} of "
            f"{int(parts['n_rows'].sum())} objects left out)"
        )

    def _set_status(self, index: int, status: PartitionStatus, message: str) -> None:
        self.array(f"{PARTITIONS}/error")[index] = message
        self.array(f"{PARTITIONS}/status")[index] = int(status)

    def _table_arrays(self) -> list[str]:
        return [name for name in PARTITION_ARRAYS if f"{PARTITIONS}/{name}" in self.group]


def _label(row: pd.Series) -> str:
    """How a partition is named in messages: its pixel, else its file, else its index."""
    if row["norder"] >= 0:
        return f"Norder={row['norder']}/Npix={row['npix']}"
    return str(row["file"]) or f"partition {row.name}"


def _cast(where: str, name: str, column: Column, values: Any, n: int) -> np.ndarray:
    """``values`` as ``column``'s dtype, checked: shape (n, ...), no float -> int, integers in range."""
    values = np.asarray(values)
    want = (n, *column.shape_tail)
    if values.shape != want:
        raise PartitionDataError(f"{where}: {name} has shape {values.shape}, expected {want}")
    target = np.dtype(column.dtype)
    if target.kind in "iu":
        if values.dtype.kind not in "iub":
            raise PartitionDataError(f"{where}: {name} is {values.dtype}, expected integers ({target})")
        info = np.iinfo(target)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise PartitionDataError(
                f"{where}: {name} has values outside {target} ({values.min()}..{values.max()})"
            )
    elif values.dtype.kind not in "fiu":
        raise PartitionDataError(f"{where}: {name} is {values.dtype}, expected numbers ({target})")
    return values.astype(target)


def _partition_table(sources: Sequence[PartitionSource]) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "norder": [-1 if s.norder is None else int(s.norder) for s in sources],
            "npix": [-1 if s.npix is None else int(s.npix) for s in sources],
            "n_rows": [int(s.n_rows) for s in sources],
            "file": [s.file for s in sources],
            "file_size": [int(s.size) for s in sources],
            "file_stamp": [s.stamp for s in sources],
        }
    )
    for name in ("norder", "npix", "n_rows", "file_size"):
        table[name] = table[name].astype(np.int64)
    if (table["n_rows"] < 0).any():
        raise ValueError("partition row counts must be >= 0")
    return table


# --- where the store lives ------------------------------------------------------------------


def _location(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> UPath:
    """The store's location: a local path as a plain path (file:// included), else a UPath."""
    loc = path if isinstance(path, UPath) and not storage_options else to_upath(path, storage_options)
    return UPath(Path(loc.path)) if is_local(loc) and not isinstance(loc, Path) else loc


def _zarr_store(loc: UPath, read_only: bool = False) -> Store:
    """The Zarr store of ``loc``; a local path made absolute now, so that lazy (dask) reads
    after a change of working directory read this store, not missing chunks (fill values)."""
    if is_local(loc):
        return zarr.storage.LocalStore(Path(loc.path).resolve(), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        str(loc), storage_options=dict(loc.storage_options), read_only=read_only
    )


def _state(attrs: Mapping[str, Any], has_partitions: bool) -> str:
    """READY or CREATING; a format-1 store (no state attribute) is ready when it has its table."""
    if "state" in attrs:
        return str(attrs["state"])
    return READY if has_partitions else CREATING


def _probe(loc: UPath) -> str:
    """What is at ``loc``: "absent" (nothing, or an empty directory), READY, CREATING (an
    interrupted creation of ours); anything else is refused (FileExistsError)."""
    if not loc.exists():
        return "absent"
    if loc.is_dir() and not any(True for _ in loc.iterdir()):
        return "absent"
    try:
        meta = json.loads((loc / "zarr.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        raise FileExistsError(
            f"{loc} exists and is not a {FORMAT} store; refusing to use or overwrite it (choose another path)"
        ) from None
    attrs = _decode_attrs(meta.get("attributes") or {})
    if attrs.get("format") != FORMAT:
        raise FileExistsError(
            f"{loc} is a Zarr group this package did not make; refusing to use or overwrite it"
        )
    return _state(attrs, (loc / PARTITIONS / "zarr.json").exists())


def _members(loc: UPath) -> tuple[list[str], list[str]]:
    """(files, directories) under ``loc``, as paths relative to it."""
    if is_local(loc):
        files, dirs = [], []
        for root, subdirs, names in os.walk(loc.path):
            rel = os.path.relpath(root, loc.path)
            prefix = "" if rel == "." else rel + "/"
            files += [prefix + n for n in names]
            dirs += [prefix + d for d in subdirs]
        return files, dirs
    base = loc.path.rstrip("/")
    found: dict[str, dict[str, Any]] = loc.fs.find(base, withdirs=True, detail=True)
    relative = {p: p[len(base) :].lstrip("/") for p in found}
    return (
        [relative[p] for p, info in found.items() if info["type"] != "directory" and relative[p]],
        [relative[p] for p, info in found.items() if info["type"] == "directory" and relative[p]],
    )


def unrelated_members(loc: UPath, arrays: Collection[str]) -> list[str]:
    """Files and folders under the Zarr group ``loc`` that are not the group's or one of
    ``arrays``' (names such as "flux" or "partitions/status"): metadata and chunk keys only."""
    groups = {"/".join(a.split("/")[:k]) for a in arrays for k in range(1, a.count("/") + 1)}
    chunk = re.compile(rf"(?:{'|'.join(re.escape(a) for a in arrays)})/c(?:/\d+)*")
    files, dirs = _members(loc)
    allowed_files = {"zarr.json"} | {f"{name}/zarr.json" for name in (*arrays, *groups)}
    bad = [f for f in files if f not in allowed_files and not chunk.fullmatch(f)]
    bad += [d + "/" for d in dirs if d not in set(arrays) | groups and not chunk.fullmatch(d)]
    return sorted(bad)


def remove_owned_group(loc: UPath, arrays: Collection[str], what: str) -> None:
    """Delete the Zarr group ``loc`` when it holds nothing but its own metadata and ``arrays``;
    otherwise refuse (FileExistsError naming up to three unrelated files)."""
    bad = unrelated_members(loc, arrays)
    if bad:
        raise FileExistsError(
            f"{loc} holds files that are not part of {what} ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); refusing to delete it: move them or choose another path"
        )
    if is_local(loc):
        shutil.rmtree(loc.path)
    else:
        loc.fs.rm(loc.path, recursive=True)


def store_arrays() -> set[str]:
    """Every array name an output store of any layout may hold."""
    return (
        set(output_columns(1, 1, 1))
        | {"quantile"}
        | {f"{PARTITIONS}/{name}" for name in (*PARTITION_ARRAYS, "status", "error")}
    )


def _check_removable(loc: UPath) -> None:
    bad = unrelated_members(loc, store_arrays())
    if bad:
        raise FileExistsError(
            f"{loc} holds files that are not part of a {FORMAT} store ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); refusing to delete it: move them or choose another path"
        )


def _swap_into_place(temp: UPath, loc: UPath, *, replace: bool) -> None:
    """Rename the finished store ``temp`` to ``loc`` (an old store at ``loc`` is renamed aside
    first and deleted last, so ``loc`` never holds a half store)."""
    aside = loc.parent / f".{loc.name}.replaced-{_owner_tag()}"
    if replace:
        os.rename(loc.path, aside.path)
    os.rename(temp.path, loc.path)  # onto nothing, or onto an empty directory (rename(2) replaces it)
    if replace:
        shutil.rmtree(aside.path)


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _leftovers(loc: UPath) -> list[tuple[Path, bool]]:
    """Local siblings ``.NAME.creating-*`` / ``.NAME.replaced-*`` of interrupted creations:
    (path, whether their creator is gone: on this host, its pid no longer runs)."""
    if not is_local(loc) or not loc.parent.is_dir():
        return []
    found = []
    for entry in loc.parent.iterdir():
        match = LEFTOVER.match(entry.name)
        if match and match["name"] == loc.name:
            gone = match["host"] == socket.gethostname() and not psutil.pid_exists(int(match["pid"]))
            found.append((Path(entry.path), gone))
    return found


def _leftover_for(loc: UPath) -> str:
    return ", ".join(p.name for p, _ in _leftovers(loc))


def _remove_leftovers(loc: UPath) -> None:
    for path, gone in _leftovers(loc):
        if gone:
            shutil.rmtree(path, ignore_errors=True)


def _consolidate(loc: UPath) -> None:
    """Write consolidated metadata so ``xarray.open_zarr(path)`` opens the store in one read.

    Array metadata never changes after creation (status lives in array data), so it
    stays valid; attribute changes go through ``OutputStore.set_attrs``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(_zarr_store(loc))


# --- attributes -----------------------------------------------------------------------------


def _netcdf_safe(value: Any) -> bool:
    """A value netCDF takes as an attribute: a string, a number, a non-empty list of either."""
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return True
    if isinstance(value, list) and value:
        return all(isinstance(v, str) for v in value) or all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        )
    return False


def _encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as stored: netCDF-safe values as they are, the rest (dicts, None, booleans,
    empty or mixed lists) as JSON strings, named in ``json_attributes``."""
    plain = {k: v for k, v in attrs.items() if k != JSON_ATTRIBUTES and _netcdf_safe(v)}
    encoded = {k: json.dumps(v) for k, v in attrs.items() if k != JSON_ATTRIBUTES and k not in plain}
    return plain | encoded | ({JSON_ATTRIBUTES: " ".join(sorted(encoded))} if encoded else {})


def _decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    names = str(attrs.get(JSON_ATTRIBUTES, "")).split()
    return {k: json.loads(v) if k in names else v for k, v in attrs.items() if k != JSON_ATTRIBUTES}


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be JSON-serialisable: {err}") from err


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    if isinstance(value, Path | UPath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _difference(stored: Any, given: Any) -> str:
    """Which keys differ between two attribute values (dicts), or both values."""
    if isinstance(stored, dict) and isinstance(given, dict):
        keys = sorted(k for k in stored.keys() | given.keys() if stored.get(k) != given.get(k))
        return "differs in " + ", ".join(f"{k}: {stored.get(k)!r} != {given.get(k)!r}" for k in keys)[:300]
    return f"{stored!r} != {given!r}"[:300]
