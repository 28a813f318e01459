"""Photometric catalogs on disk: HATS catalogs and plain Parquet directories, read and written.

A catalog is a list of partitions (one unit of work each) in a stable order, with row
counts known from Parquet metadata alone. ``read_partition`` reads only the columns a
caller needs, matching names case-insensitively. ``write_hats`` writes a real HATS
catalog, as hats-import / LSDB do, from an in-memory table.

HATS layout (https://www.ivoa.net/documents/Notes/HATS/)::

    CATALOG/hats.properties                         (legacy name: properties)
    CATALOG/partition_info.csv                      Norder,Npix
    CATALOG/dataset/_metadata, _common_metadata
    CATALOG/dataset/Norder=K/Dir=D/Npix=N.parquet   D = N // 10000 * 10000
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from specdiff_catalog.bands import require_columns, resolve_columns

SPATIAL_INDEX = "_healpix_29"
PROPERTIES_FILES = ("hats.properties", "properties")
COLLECTION_FILE = "collection.properties"
_PIXEL_FILE = re.compile(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)\.parquet$")


class CatalogError(ValueError):
    """A path is not a readable catalog, or one of its files is unreadable; names the path."""


@dataclass(frozen=True)
class Partition:
    """One unit of work: a Parquet file and where it sits in the catalog.

    order, pixel: its HEALPix (Norder, Npix) in a HATS catalog, None in a plain directory.
    n_rows: rows in the file, from Parquet metadata. index: position in catalog order.
    """

    path: Path
    order: int | None
    pixel: int | None
    n_rows: int
    index: int


@dataclass
class Catalog:
    """A partitioned catalog: kind ``"hats"`` or ``"parquet"``, its partitions in a stable order.

    properties: the HATS properties as strings (empty for a plain directory).
    columns: every column of the data files, as spelled on disk.
    """

    root: Path
    kind: str
    properties: dict[str, str]
    partitions: list[Partition]
    columns: list[str]

    @property
    def n_rows(self) -> int:
        return sum(p.n_rows for p in self.partitions)


def demo_catalog_dir() -> Path:
    """The small HATS catalog bundled with the package (a simulated survey; its truth
    is ``truth.parquet`` beside it): what ``run`` reads when no ``--input`` is given."""
    from importlib import resources

    return Path(str(resources.files("specdiff_catalog") / "data" / "demo_catalog" / "catalog"))


def open_catalog(path: str | Path) -> Catalog:
    """Discover a HATS catalog (or collection), a directory of Parquet files or one Parquet file.

    A HATS collection (``collection.properties``) opens its primary catalog.

    No data pages are read: row counts come from ``dataset/_metadata`` when present,
    otherwise from each file's footer. HATS partitions are in nested HEALPix order
    (that of ``_healpix_29``); plain Parquet files are sorted by name.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such catalog")
    if (root / COLLECTION_FILE).is_file():
        root = _primary_catalog(root)
    if root.is_file():
        return _plain_catalog(root, [root])
    if any((root / name).is_file() for name in PROPERTIES_FILES):
        return _hats_catalog(root)
    files = sorted(f for f in root.glob("*.parquet") if f.is_file())
    if not files:
        raise CatalogError(f"{root}: not a catalog (no hats.properties, no *.parquet files)")
    return _plain_catalog(root, files)


def read_partition(
    partition: Partition, columns: Sequence[str], *, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """Read ``columns`` (required) and whichever of ``optional`` exist from one partition.

    Names match case-insensitively; the frame's columns carry the requested spelling,
    in the order requested. Raises MissingColumnError naming the file and the absent
    required columns, CatalogError for an unreadable file or a row count that
    disagrees with the catalog metadata.
    """
    schema = _read_schema(partition.path)
    names = _data_columns(schema)
    found = require_columns(names, columns, where=str(partition.path))
    found |= {k: v for k, v in resolve_columns(names, optional).items() if k not in found}
    try:
        table = pq.read_table(partition.path, columns=list(dict.fromkeys(found.values())))
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{partition.path}: unreadable Parquet file ({err})") from err
    if table.num_rows != partition.n_rows:
        raise CatalogError(
            f"{partition.path}: {table.num_rows} rows, but the catalog metadata says {partition.n_rows}"
            " (stale dataset/_metadata?)"
        )
    frame = table.to_pandas().loc[:, list(found.values())]
    frame.columns = list(found)
    return frame


def write_hats(
    table: pd.DataFrame,
    path: str | Path,
    *,
    order: int,
    catalog_name: str,
    ra_column: str = "RA",
    dec_column: str = "DEC",
    extra_properties: dict | None = None,
    overwrite: bool = False,
) -> Catalog:
    """Write ``table`` as a HATS object catalog partitioned at one HEALPix ``order``.

    Adds ``_healpix_29`` (int64, order-29 nested index of ra/dec in degrees) as the
    first column, sorts rows by it, and writes one Parquet file per non-empty pixel,
    ``dataset/_metadata`` + ``_common_metadata``, ``partition_info.csv`` and
    ``hats.properties`` (plus the legacy ``properties``) with hats' own writers.
    ``extra_properties`` are added to the properties (e.g. ``obs_title``).
    Opens with ``hats.read_hats`` and ``lsdb.open_catalog``; returns ``open_catalog(path)``.
    """
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel
    from hats.pixel_math.spatial_index import compute_spatial_index, spatial_index_to_healpix

    if len(table) == 0:
        raise ValueError("write_hats: the table is empty; a HATS catalog needs at least one row")
    root = _prepare_output_dir(Path(path), overwrite)
    cols = require_columns(table.columns, [ra_column, dec_column], where="write_hats table")
    ra = table[cols[ra_column]].to_numpy(dtype=np.float64)
    dec = table[cols[dec_column]].to_numpy(dtype=np.float64)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise ValueError(f"write_hats: non-finite values in {ra_column}/{dec_column}")
    index = compute_spatial_index(ra, dec).astype(np.int64)
    order_rows = np.argsort(index, kind="stable")
    frame = table.drop(columns=[c for c in table.columns if c.upper() == SPATIAL_INDEX.upper()])
    frame = frame.iloc[order_rows].reset_index(drop=True)
    frame.insert(0, SPATIAL_INDEX, index[order_rows])
    arrow = pa.Table.from_pandas(frame, preserve_index=False)

    pixels = spatial_index_to_healpix(frame[SPATIAL_INDEX].to_numpy(), target_order=order)
    starts = np.flatnonzero(np.r_[True, pixels[1:] != pixels[:-1]])
    counts = np.diff(np.r_[starts, len(pixels)])
    write_kwargs = hats.io.file_io.get_parquet_write_table_kwargs(arrow.schema)
    healpix = []
    for start, count in zip(starts, counts, strict=True):
        pixel = HealpixPixel(order, int(pixels[start]))
        file = Path(hats.io.paths.pixel_catalog_file(root, pixel).path)
        file.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow.slice(start, count), file, **write_kwargs)
        healpix.append(pixel)

    hats.io.write_parquet_metadata(root)
    partition_info = PartitionInfo.from_healpix(healpix)
    partition_info.write_to_file(catalog_path=root)
    # hats' pydantic model takes field names (populate_by_name); without pydantic's mypy plugin
    # mypy knows only the aliases
    properties = TableProperties(  # type: ignore[call-arg]
        catalog_name=catalog_name,
        catalog_type="object",
        total_rows=len(frame),
        ra_column=cols[ra_column],
        dec_column=cols[dec_column],
        healpix_column=SPATIAL_INDEX,
        healpix_order=29,
        hats_max_rows=int(counts.max()),
        moc_sky_fraction=float(partition_info.calculate_fractional_coverage()),
        hats_order=order,
        **TableProperties.new_provenance_dict(root, builder=_builder()),
        **(extra_properties or {}),
    )
    properties.to_properties_file(root)
    return open_catalog(root)


def _builder() -> str:
    from specdiff_catalog import __version__

    return f"specdiff-catalog v{__version__}"


def _prepare_output_dir(root: Path, overwrite: bool) -> Path:
    if root.exists() and (root.is_file() or any(root.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (use overwrite)")
        if root.is_file():
            root.unlink()
        else:
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _hats_catalog(root: Path) -> Catalog:
    properties = _read_properties(next(root / name for name in PROPERTIES_FILES if (root / name).is_file()))
    suffix = properties.get("hats_npix_suffix", ".parquet")
    if suffix != ".parquet":
        raise CatalogError(f"{root}: hats_npix_suffix={suffix!r} is not supported (only .parquet files)")
    pixels = _hats_pixels(root)
    if not pixels:
        raise CatalogError(
            f"{root}: a HATS catalog with no partitions (no dataset/Norder=*/Dir=*/Npix=*.parquet)"
        )
    files = [_pixel_file(root, k, n) for k, n in pixels]
    counts = _row_counts(files, root / "dataset" / "_metadata")
    partitions = [
        Partition(f, k, n, counts[f], i) for i, (f, (k, n)) in enumerate(zip(files, pixels, strict=True))
    ]
    schema_file = root / "dataset" / "_common_metadata"
    schema = _read_schema(schema_file if schema_file.is_file() else files[0])
    return Catalog(root, "hats", properties, partitions, _data_columns(schema))


def _primary_catalog(collection: Path) -> Path:
    primary = _read_properties(collection / COLLECTION_FILE).get("hats_primary_table_url")
    if not primary:
        raise CatalogError(f"{collection / COLLECTION_FILE}: no hats_primary_table_url")
    return collection / primary


def _plain_catalog(root: Path, files: list[Path]) -> Catalog:
    counts = _row_counts(files, None)
    partitions = [Partition(f, None, None, counts[f], i) for i, f in enumerate(files)]
    return Catalog(root, "parquet", {}, partitions, _data_columns(_read_schema(files[0])))


def _read_properties(file: Path) -> dict[str, str]:
    """A java-style properties file (as hats writes them) as strings."""
    from jproperties import Properties

    props = Properties()
    with file.open("rb") as fh:
        props.load(fh, "utf-8")
    return {key: value.data for key, value in props.items()}


def _hats_pixels(root: Path) -> list[tuple[int, int]]:
    """(Norder, Npix) of every partition in nested order (that of ``_healpix_29``)."""
    from hats.pixel_math import HealpixPixel
    from hats.pixel_math.healpix_pixel_function import get_pixel_argsort

    info = root / "partition_info.csv"
    if info.is_file():
        try:
            table = pd.read_csv(info)
            pixels = list(zip(table["Norder"].astype(int), table["Npix"].astype(int), strict=True))
        except (KeyError, ValueError, pd.errors.ParserError) as err:
            raise CatalogError(f"{info}: not a partition_info.csv with Norder,Npix columns ({err})") from err
    else:
        files = root.glob("dataset/Norder=*/Dir=*/Npix=*.parquet")
        found = (_PIXEL_FILE.search(p.relative_to(root).as_posix()) for p in files)
        pixels = sorted({(int(m[1]), int(m[2])) for m in found if m})
    argsort = get_pixel_argsort([HealpixPixel(k, n) for k, n in pixels])
    return [(int(pixels[i][0]), int(pixels[i][1])) for i in argsort]


def _pixel_file(root: Path, order: int, pixel: int) -> Path:
    return root / "dataset" / f"Norder={order}" / f"Dir={pixel // 10000 * 10000}" / f"Npix={pixel}.parquet"


def _row_counts(files: list[Path], metadata_file: Path | None) -> dict[Path, int]:
    """Rows per file from the combined ``_metadata`` row groups, else from each footer."""
    counts: dict[Path, int] = {}
    if metadata_file is not None and metadata_file.is_file():
        meta = _read_metadata(metadata_file)
        by_path: dict[str, int] = defaultdict(int)
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            by_path[group.column(0).file_path] += group.num_rows
        base, wanted = metadata_file.parent, set(files)
        counts = {base / rel: n for rel, n in by_path.items() if (base / rel) in wanted}
    for file in files:
        if file not in counts:
            if not file.is_file():
                raise FileNotFoundError(f"{file}: partition file listed in the catalog is missing")
            counts[file] = _read_metadata(file).num_rows
    return counts


def _read_metadata(file: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(file)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{file}: unreadable Parquet file ({err})") from err


def _read_schema(file: Path) -> pa.Schema:
    try:
        return pq.read_schema(file)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{file}: unreadable Parquet file ({err})") from err


def _data_columns(schema: pa.Schema) -> list[str]:
    """Column names without pandas' stored index columns (``__index_level_0__``)."""
    return [name for name in schema.names if not name.startswith("__index_level_")]


def object_ids(table: pd.DataFrame, id_column: str | None = None, *, where: str = "table") -> np.ndarray:
    """(N,) int64 object ids of a partition's rows.

    ``id_column`` when given; else an OBJECT_ID column; else the Legacy Surveys
    ``ls_id`` packing RELEASE << 40 | BRICKID << 16 | OBJID. Raises MissingColumnError
    (naming ``where``) when none of these is present.
    """
    columns = list(table.columns)
    if id_column is None and not resolve_columns(columns, ["OBJECT_ID"]):
        packed = require_columns(columns, ["RELEASE", "BRICKID", "OBJID"], f"{where} (no OBJECT_ID column)")
        release, brick, obj = (
            table[packed[c]].to_numpy().astype(np.int64) for c in ("RELEASE", "BRICKID", "OBJID")
        )
        return (release << 40) | (brick << 16) | obj
    name = require_columns(columns, [id_column or "OBJECT_ID"], where)[id_column or "OBJECT_ID"]
    return table[name].to_numpy().astype(np.int64)


def spatial_index(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N,) int64 ``_healpix_29`` of ra, dec in degrees (-1 where a coordinate is not finite)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    good = np.isfinite(ra) & np.isfinite(dec)
    index = np.full(ra.shape, -1, dtype=np.int64)
    index[good] = compute_spatial_index(ra[good], dec[good]).astype(np.int64)
    return index
