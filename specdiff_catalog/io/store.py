"""The Zarr v3 output store of ``run``: shard-aligned partition regions, status, resume, provenance.

One group, one row per input object in catalog order (see docs/formats.md; the
per-object columns, with their units and long names, are ``io.columns.output_columns``)::

    OUT.zarr/   attrs: format, layout, software_version, created, model, config, input, ...
      object_id, _healpix_29 (object,) int64      ra, dec (object,) float64
      valid (object,) uint8 (0 = padding)         flags (object,) uint16 (Flag bits)
      quantile (quantile,) float64                z_quantiles (object, quantile) float32
      z_median, z_mode, z_mean, z_std (object,) float32
      latent, latent_std (object, latent_dim) float32
      z_samples (object, sample) float16
      partitions/  norder, npix, start, stop, n_rows, status, error   (partition,)

Partition i owns the rows ``start:stop`` (whole shards); its objects are the first
``n_rows`` of them, the rest is padding (valid = 0, flags = PADDING). No two
partitions share a chunk or a shard, so processes may write different partitions at
once. ``write_partition`` writes the arrays, then the status: a writer killed in
between leaves the partition pending, and a resumed run writes it again.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import zarr

from specdiff_catalog import __version__
from specdiff_catalog.io.columns import Column, output_columns

FORMAT = "specdiff-catalog output"
FORMAT_VERSION = 1
PARTITIONS = "partitions"


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"quantiles": list(self.quantiles)}


class StoreMismatchError(ValueError):
    """An existing store was made for another catalog, layout, model or configuration."""


def regions(n_rows: Sequence[int], shard_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each partition's rows: consecutive, each a whole number of shards."""
    sizes = -(-np.asarray(n_rows, dtype=np.int64) // shard_rows) * shard_rows
    stop = np.cumsum(sizes, dtype=np.int64)
    return stop - sizes, stop


def create_store(
    path: str | Path,
    partitions: Sequence[tuple[int | None, int | None, int]],
    layout: StoreLayout,
    attrs: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> OutputStore:
    """Create the store for ``partitions`` ((norder, npix, n_rows) in catalog order).

    ``attrs`` (JSON-serialisable) become the group attributes: model (id, sha256), config,
    input (path, HATS properties), command line...; ``software_version`` and ``created``
    (UTC ISO 8601) are filled in when absent. An existing store is returned as it is when
    its partitions, layout, model and config match (resume), refused otherwise;
    ``overwrite=True`` replaces it (only a store or an empty directory is ever removed).
    """
    path = Path(path)
    table = _partition_table(partitions)
    user_attrs = json.loads(_to_json(attrs, "store attributes"))
    if (path / "zarr.json").is_file() and not overwrite:
        store = open_store(path)
        store._check_same(table, layout)
        store.check_compatible(attrs)
        return store
    if path.exists():
        _remove_store(path)
    start, stop = regions(table["n_rows"], layout.shard_rows)
    group = zarr.open_group(
        path,
        mode="w-",
        attributes={
            "software_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **user_attrs,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layout": layout.to_dict(),
        },
    )
    _create_object_arrays(group, layout, int(stop[-1]) if len(stop) else 0)
    _create_partition_table(group, table, start, stop)
    _consolidate(path)
    return open_store(path)


def _create_object_arrays(group: zarr.Group, layout: StoreLayout, n_objects: int) -> None:
    """The per-object arrays, sharded along ``object``, and the ``quantile`` coordinate."""
    for name, column in layout.columns().items():
        tail = column.shape_tail
        # Unwritten rows read as "no result": NaN / -1, valid = 0, no flags.
        group.create_array(
            name,
            shape=(n_objects, *tail),
            dtype=column.dtype,
            chunks=(layout.rows_per_chunk, *tail),
            shards=(layout.shard_rows, *tail),
            fill_value=0 if name == "flags" else column.fill,
            dimension_names=column.dims,
            attributes=column.attributes(),
        )
    group.create_array(
        "quantile",
        data=np.asarray(layout.quantiles, dtype=np.float64),
        dimension_names=("quantile",),
        attributes={"long_name": "PDF quantile level"},
    )


def _create_partition_table(
    group: zarr.Group, table: pd.DataFrame, start: np.ndarray, stop: np.ndarray
) -> None:
    """``partitions/``: norder, npix, start, stop, n_rows (fixed) and status, error (per-partition chunks)."""
    parts = group.create_group(PARTITIONS)
    columns = {
        "norder": table["norder"],
        "npix": table["npix"],
        "start": start,
        "stop": stop,
        "n_rows": table["n_rows"],
    }
    for name, values in columns.items():
        parts.create_array(name, data=np.asarray(values, dtype=np.int64), dimension_names=("partition",))
    # One chunk per partition: writers of different partitions never touch the same file.
    parts.create_array(
        "status",
        shape=(len(table),),
        dtype="uint8",
        chunks=(1,),
        fill_value=int(PartitionStatus.PENDING),
        dimension_names=("partition",),
        attributes={
            "flag_values": [int(s) for s in PartitionStatus],
            "flag_meanings": " ".join(s.label for s in PartitionStatus),
        },
    )
    parts.create_array(
        "error", shape=(len(table),), dtype=str, chunks=(1,), fill_value="", dimension_names=("partition",)
    )


def open_store(path: str | Path, mode: Literal["r", "r+"] = "r+") -> OutputStore:
    """Open an existing output store for reading and writing partitions (mode "r": reading only)."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise FileNotFoundError(f"{path}: no output store here (no zarr.json)")
    group = zarr.open_group(path, mode=mode)
    if group.attrs.get("format") != FORMAT:
        raise StoreMismatchError(f"{path}: a Zarr group, but not a {FORMAT} store")
    return OutputStore(path, group)


class OutputStore:
    """An open output store: partition table, region writes, status and resume."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        layout = dict(self.attrs["layout"])
        self.layout = StoreLayout(**{**layout, "quantiles": tuple(layout["quantiles"])})
        self._start, self._stop, self._n_rows = (
            self.read(f"{PARTITIONS}/{n}") for n in ("start", "stop", "n_rows")
        )

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
        return dict(self.group.attrs)

    def __len__(self) -> int:
        """Number of partitions."""
        return len(self._start)

    def partitions(self) -> pd.DataFrame:
        """One row per partition (index = partition index): norder, npix (-1 when not HEALPix),
        start, stop (its rows, shard-aligned), n_rows (objects; the rest is padding),
        status ('pending' | 'done' | 'failed'), error (message of a failed partition)."""
        names = ("norder", "npix", "start", "stop", "n_rows")
        frame = pd.DataFrame({name: self.read(f"{PARTITIONS}/{name}") for name in names})
        labels = {int(s): s.label for s in PartitionStatus}
        frame["status"] = pd.Series(self.read(f"{PARTITIONS}/status")).map(labels)
        frame["error"] = np.asarray(self.read(f"{PARTITIONS}/error"), dtype=object)
        frame.index.name = "partition"
        return frame

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
        n_rows rows ((n_rows,) or (n_rows, width)); they are padded to the region
        (valid = 0, flags = PADDING, NaN / -1 elsewhere) and written whole shards at a time.
        """
        region, n = self.region(index), int(self._n_rows[index])
        spec = self.layout.columns()
        expected = set(spec) - {"valid"}
        if set(columns) != expected:
            missing, extra = sorted(expected - set(columns)), sorted(set(columns) - expected)
            raise ValueError(f"{self.path} partition {index}: missing arrays {missing}, unexpected {extra}")
        data = {**columns, "valid": np.ones(n, dtype=np.uint8)}
        for name, column in spec.items():
            values = np.asarray(data[name])
            want = (n, *column.shape_tail)
            if values.shape != want:
                raise ValueError(
                    f"{self.path} partition {index}: {name} has shape {values.shape}, expected {want}"
                )
            padded = column.empty(region.stop - region.start)
            padded[:n] = values
            self.array(name)[region] = padded
        self._set_status(index, PartitionStatus.DONE, "")

    def mark_failed(self, index: int, message: str) -> None:
        """Record that partition ``index`` failed (it stays in pending() for the next run)."""
        self._set_status(index, PartitionStatus.FAILED, message)

    def check_compatible(self, attrs: Mapping[str, Any]) -> None:
        """Refuse to resume with another model (sha256) or configuration than the store's."""
        given = json.loads(_to_json(attrs, "store attributes"))
        for key in COMPATIBILITY_KEYS:
            stored = self.group.attrs.get(key)
            if given.get(key) != stored:
                raise StoreMismatchError(
                    f"{self.path} was written with a different {key} ({_difference(stored, given.get(key))});"
                    " use another output path or overwrite"
                )

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Add or replace store attributes (e.g. a run summary) and refresh the consolidated metadata."""
        self.group.attrs.update(json.loads(_to_json(attrs, "store attributes")))
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

    def _set_status(self, index: int, status: PartitionStatus, message: str) -> None:
        self.array(f"{PARTITIONS}/error")[index] = message
        self.array(f"{PARTITIONS}/status")[index] = int(status)

    def _check_same(self, table: pd.DataFrame, layout: StoreLayout) -> None:
        if layout != self.layout:
            raise StoreMismatchError(
                f"{self.path} has layout {self.layout}, not {layout}; use another output path or overwrite"
            )
        mine = self.partitions()[["norder", "npix", "n_rows"]].reset_index(drop=True)
        if not mine.equals(table.reset_index(drop=True)):
            raise StoreMismatchError(
                f"{self.path} was made for other partitions ({len(mine)} partitions, "
                f"{int(mine['n_rows'].sum())} rows;"
                f" now {len(table)}, {int(table['n_rows'].sum())}); use another output path or overwrite"
            )


def _partition_table(partitions: Sequence[tuple[int | None, int | None, int]]) -> pd.DataFrame:
    rows = [(-1 if k is None else int(k), -1 if n is None else int(n), int(r)) for k, n, r in partitions]
    table = pd.DataFrame(rows, columns=["norder", "npix", "n_rows"], dtype=np.int64)
    if (table["n_rows"] < 0).any():
        raise ValueError("partition row counts must be >= 0")
    return table


def _remove_store(path: Path) -> None:
    """Remove an existing store (or empty directory); refuse anything else."""
    if path.is_dir() and ((path / "zarr.json").is_file() or not any(path.iterdir())):
        shutil.rmtree(path)
    else:
        raise FileExistsError(f"{path} exists and is not a Zarr store; refusing to overwrite it")


def _consolidate(path: Path) -> None:
    """Write consolidated metadata so ``xarray.open_zarr(path)`` opens the store in one read.

    Array metadata never changes after creation (status lives in array data), so it
    stays valid; attribute changes go through ``OutputStore.set_attrs``.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(path)


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
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _difference(stored: Any, given: Any) -> str:
    """Which keys differ between two attribute values (dicts), or both values."""
    if isinstance(stored, dict) and isinstance(given, dict):
        keys = sorted(k for k in stored.keys() | given.keys() if stored.get(k) != given.get(k))
        return "differs in " + ", ".join(f"{k}: {stored.get(k)!r} != {given.get(k)!r}" for k in keys)[:300]
    return f"{stored!r} != {given!r}"[:300]
