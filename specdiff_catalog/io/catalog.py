"""Photometric catalogs: HATS catalogs (read with ``hats``) and plain Parquet directories, local or at a URL.

A catalog is a list of partitions (one unit of work each) in a stable order, with row
counts known from Parquet metadata alone. ``read_objects`` reads only the columns a
caller needs, matching names case-insensitively, and the object ids exactly
(``object_ids``: the id policy). ``write_hats`` writes a real HATS catalog, as
hats-import / LSDB do, from an in-memory table.

Paths are local paths or fsspec URLs (``file://``, ``memory://``, ``s3://``, ``gs://``,
``https://``, ...) with ``storage_options`` for their filesystem (``io.paths``).

HATS layout (https://www.ivoa.net/documents/Notes/HATS/)::

    CATALOG/hats.properties                         (legacy name: properties)
    CATALOG/partition_info.csv                      Norder,Npix
    CATALOG/dataset/_metadata, _common_metadata
    CATALOG/dataset/Norder=K/Dir=D/Npix=N.parquet   D = N // 10000 * 10000
    CATALOG/dataset/Norder=K/Dir=D/Npix=N/*.parquet with hats_npix_suffix=/ (a directory per pixel)

A collection (``collection.properties``) opens its main catalog; its margin and index
catalogs are not read (a photo-z is per object, and a margin holds copies of objects
of the neighbouring pixels). A margin catalog given directly is refused for that reason.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from specdiff_catalog.bands import require_columns, resolve_columns
from specdiff_catalog.io.paths import PathLike, is_local, to_upath

SPATIAL_INDEX = "_healpix_29"
PROPERTIES_FILES = ("hats.properties", "properties")
COLLECTION_FILE = "collection.properties"
INPUT_TYPES = ("object", "source")
"""HATS catalog types ``run`` reads: one row per object (or per detection)."""
ID_COLUMN = "OBJECT_ID"
PACKED_ID_BITS = {"RELEASE": (40, 23), "BRICKID": (16, 24), "OBJID": (0, 16)}
"""Legacy Surveys ``ls_id`` packing: column -> (shift, bits); RELEASE << 40 | BRICKID << 16 | OBJID."""
ID_CANDIDATES = (ID_COLUMN, *PACKED_ID_BITS)
_NPIX_DIR = re.compile(r"^(.*/Npix=\d+)/[^/]+$")
_INT64_MAX = np.iinfo(np.int64).max


class CatalogError(ValueError):
    """A path is not a readable catalog, or one of its files is unreadable; names the path."""


class ObjectIdError(ValueError):
    """Object ids that cannot be used as they are (null, out of int64, duplicated, not integers);
    the message names the file and the ids."""


@dataclass(frozen=True)
class Partition:
    """One unit of work: a HATS pixel or a plain Parquet file, and where it sits in the catalog.

    path: the pixel's Parquet file, its directory (``hats_npix_suffix=/``) or a plain file.
    files: the Parquet files it reads, sorted (one unless ``path`` is a directory).
    order, pixel: its HEALPix (Norder, Npix) in a HATS catalog, None in a plain directory.
    n_rows: rows of all its files, from Parquet metadata. index: position in catalog order.
    """

    path: UPath
    files: tuple[UPath, ...]
    order: int | None
    pixel: int | None
    n_rows: int
    index: int

    @property
    def url(self) -> str:
        """``path`` as a string: a local path, or a URL with its scheme."""
        return str(self.path)


@dataclass
class Catalog:
    """A partitioned catalog: kind ``"hats"`` or ``"parquet"``, its partitions in a stable order.

    root: the catalog directory (a collection's main catalog), a plain directory or one file.
    properties: the HATS properties as strings (empty for a plain directory).
    schema: the Arrow schema of the data files (``_common_metadata``, else the first file),
    without pandas' stored index columns.
    """

    root: UPath
    kind: str
    properties: dict[str, str]
    partitions: list[Partition]
    schema: pa.Schema

    @property
    def n_rows(self) -> int:
        return sum(p.n_rows for p in self.partitions)

    @property
    def url(self) -> str:
        """``root`` as a string: a local path, or a URL with its scheme."""
        return str(self.root)

    @property
    def columns(self) -> list[str]:
        """Every column of the data files, as spelled on disk."""
        return list(self.schema.names)


def demo_catalog_dir() -> Path:
    """The small HATS catalog bundled with the package (a simulated survey; its truth
    is ``truth.parquet`` beside it): what ``run`` reads when no ``--input`` is given."""
    from importlib import resources

    return Path(str(resources.files("specdiff_catalog") / "data" / "demo_catalog" / "catalog"))


def open_catalog(path: PathLike, storage_options: Mapping[str, Any] | None = None) -> Catalog:
    """Discover a HATS catalog (or collection), a directory of Parquet files or one Parquet file.

    path: a local path or fsspec URL; storage_options: for its filesystem (io.paths.to_upath,
    which raises PathError for an unknown scheme or a filesystem package not installed).
    A HATS collection (``collection.properties``) opens its main catalog.

    No data pages are read: row counts come from ``dataset/_metadata`` when present,
    otherwise from each file's footer. HATS partitions are in nested HEALPix order
    (that of ``_healpix_29``); plain Parquet files are sorted by name.
    """
    root = to_upath(path, storage_options)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such catalog")
    if (root / COLLECTION_FILE).is_file():
        root = _main_catalog(root, storage_options)
    if root.is_file():
        return _plain_catalog(root, [root])
    if any((root / name).is_file() for name in PROPERTIES_FILES):
        return _hats_catalog(root)
    files = sorted((f for f in root.glob("*.parquet") if f.is_file()), key=lambda f: f.name)
    if not files:
        raise CatalogError(f"{root}: not a catalog (no hats.properties, no *.parquet files)")
    return _plain_catalog(root, files)


def read_partition(
    partition: Partition, columns: Sequence[str], *, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """Read ``columns`` (required) and whichever of ``optional`` exist from one partition.

    Names match case-insensitively; the frame's columns carry the requested spelling,
    in the order requested. Raises MissingColumnError naming the file and the absent
    required columns, AmbiguousColumnError for two columns that differ only in case,
    CatalogError for an unreadable file or a row count that disagrees with the catalog
    metadata. pandas turns an integer column with nulls into float64: read ids with
    ``read_objects``.
    """
    found = _resolve(partition, columns, optional)
    return _read_arrow(partition, found).to_pandas()


def read_objects(
    partition: Partition,
    columns: Sequence[str],
    *,
    optional: Sequence[str] = (),
    id_column: str | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``read_partition`` of ``columns`` and ``optional``, and the (N,) int64 object ids of its
    rows (``object_ids``), taken from the Arrow columns before any conversion, so exact.

    Raises ObjectIdError naming the file for null, out-of-range or duplicate ids, and
    MissingColumnError when no id column is present.
    """
    names = _data_columns(_read_schema(partition.files[0]))
    wanted_ids = id_columns(names, id_column, partition.url)
    found = _resolve(partition, columns, [*optional, *wanted_ids], names)
    table = _read_arrow(partition, found)
    on_disk = table.select(wanted_ids).rename_columns([found[name] for name in wanted_ids])
    ids = object_ids(on_disk, id_column, where=partition.url)
    asked = {*columns, *optional}
    return table.select([name for name in found if name in asked]).to_pandas(), ids


def _resolve(
    partition: Partition, columns: Sequence[str], optional: Sequence[str], names: list[str] | None = None
) -> dict[str, str]:
    """Requested name -> name on disk: every one of ``columns`` (else MissingColumnError naming
    the partition), the ``optional`` ones that exist."""
    if names is None:
        names = _data_columns(_read_schema(partition.files[0]))
    found = require_columns(names, columns, where=partition.url)
    return found | {
        k: v for k, v in resolve_columns(names, optional, partition.url).items() if k not in found
    }


def _read_arrow(partition: Partition, found: Mapping[str, str]) -> pa.Table:
    """The columns ``found`` (requested name -> name on disk) of every file of ``partition``,
    named as requested, in that order."""
    on_disk = list(dict.fromkeys(found.values()))
    tables = []
    for file in partition.files:
        path, filesystem = _arrow_path(file)
        try:
            tables.append(pq.read_table(path, columns=on_disk, filesystem=filesystem))
        except (pa.ArrowException, OSError) as err:
            raise CatalogError(f"{file}: unreadable Parquet file ({_one_line(err)})") from err
    try:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as err:
        raise CatalogError(f"{partition.url}: its files have different schemas ({_one_line(err)})") from err
    if table.num_rows != partition.n_rows:
        raise CatalogError(
            f"{partition.url}: {table.num_rows} rows, but the catalog metadata says {partition.n_rows}"
            " (stale dataset/_metadata?)"
        )
    return pa.table({name: table[disk] for name, disk in found.items()})


# --- object ids ------------------------------------------------------------------------------


def id_columns(available: Iterable[str], id_column: str | None, where: str) -> list[str]:
    """The column(s) the ids come from: ``id_column`` when given, else OBJECT_ID, else the
    Legacy Surveys RELEASE, BRICKID, OBJID (packed); spelled as requested (match them with
    ``resolve_columns``). Raises MissingColumnError naming ``where`` when none is present."""
    available = list(available)
    if id_column is not None:
        require_columns(available, [id_column], where)
        return [id_column]
    if resolve_columns(available, [ID_COLUMN]):
        return [ID_COLUMN]
    require_columns(available, list(PACKED_ID_BITS), f"{where} (no {ID_COLUMN} column)")
    return list(PACKED_ID_BITS)


def id_type_problem(name: str, dtype: pa.DataType) -> str | None:
    """Why a column of type ``dtype`` cannot hold object ids, or None when it can (integers)."""
    if pa.types.is_integer(dtype):
        return None
    return f"id column {name} is {dtype}, not an integer column (object ids are 64-bit integers)"


def object_ids(
    table: pa.Table | pd.DataFrame, id_column: str | None = None, *, where: str = "table"
) -> np.ndarray:
    """(N,) int64 object ids of a partition's rows, exactly as stored (the id policy, docs/output.md).

    ``id_column`` when given; else an OBJECT_ID column; else the Legacy Surveys ``ls_id``
    packing RELEASE << 40 | BRICKID << 16 | OBJID. Refused, with ObjectIdError naming
    ``where`` and the offending ids: a column that is not of an integer type (e.g. RA),
    null ids, uint64 ids above 2^63 - 1, packed parts outside their bit fields, and an id
    that occurs twice. MissingColumnError when none of the columns is present.
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    names = id_columns(table.column_names, id_column, where)
    found = resolve_columns(table.column_names, names)
    parts = {name: _integer_column(table[found[name]], found[name], where) for name in names}
    if len(names) == 1:
        ids = parts[names[0]]
    else:
        ids = np.zeros(table.num_rows, dtype=np.int64)
        for name, (shift, bits) in PACKED_ID_BITS.items():
            values = parts[name]
            bad = (values < 0) | (values >= 1 << bits)
            if bad.any():
                raise ObjectIdError(
                    f"{where}: {found[name]} outside 0..{(1 << bits) - 1}, its {bits}-bit field of the "
                    f"packed id RELEASE << 40 | BRICKID << 16 | OBJID: {_listing(values[bad])}"
                )
            ids |= values << shift
    _check_unique(ids, where)
    return ids


def _integer_column(column: pa.ChunkedArray, name: str, where: str) -> np.ndarray:
    """(N,) int64 values of an integer Arrow column; ObjectIdError for any other type, nulls
    or values beyond int64."""
    problem = id_type_problem(name, column.type)
    if problem:
        raise ObjectIdError(f"{where}: {problem}")
    if column.null_count:
        rows = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
        raise ObjectIdError(
            f"{where}: {column.null_count} null value(s) in id column {name} at row(s) {_listing(rows)}"
        )
    values = column.to_numpy()
    if values.dtype == np.uint64 and (values > _INT64_MAX).any():
        big = values[values > _INT64_MAX]
        raise ObjectIdError(
            f"{where}: {big.size} id(s) in {name} above 2^63 - 1, the largest int64: {_listing(big)}"
        )
    return values.astype(np.int64)


def _check_unique(ids: np.ndarray, where: str) -> None:
    ordered = np.sort(ids)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if repeated.size:
        raise ObjectIdError(
            f"{where}: {repeated.size} object id(s) occur more than once: {_listing(repeated)}"
        )


def _listing(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" ... ({values.size} in all)" if values.size > limit else "")


# --- writing ---------------------------------------------------------------------------------


def write_hats(
    table: pd.DataFrame,
    path: PathLike,
    *,
    order: int,
    catalog_name: str,
    ra_column: str = "RA",
    dec_column: str = "DEC",
    extra_properties: dict | None = None,
    overwrite: bool = False,
    npix_suffix: str = ".parquet",
    storage_options: Mapping[str, Any] | None = None,
) -> Catalog:
    """Write ``table`` as a HATS object catalog partitioned at one HEALPix ``order``.

    Adds ``_healpix_29`` (int64, order-29 nested index of ra/dec in degrees) as the
    first column, sorts rows by it, and writes one Parquet file per non-empty pixel
    (``npix_suffix`` ".parquet": Npix=N.parquet; "/": a directory Npix=N/ holding
    Npix=N.parquet), ``dataset/_metadata`` + ``_common_metadata``, ``partition_info.csv``
    and ``hats.properties`` (plus the legacy ``properties``) with hats' own writers.
    ``path``: a local path or fsspec URL. ``extra_properties`` are added to the properties
    (e.g. ``obs_title``). Opens with ``hats.read_hats`` and ``lsdb.open_catalog``; returns
    ``open_catalog(path)``.
    """
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math import HealpixPixel
    from hats.pixel_math.spatial_index import compute_spatial_index, spatial_index_to_healpix

    if len(table) == 0:
        raise ValueError("write_hats: the table is empty; a HATS catalog needs at least one row")
    root = _prepare_output_dir(to_upath(path, storage_options), overwrite)
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
        file = hats.io.paths.new_pixel_catalog_file(root, pixel, npix_suffix=npix_suffix)
        file_path, filesystem = _arrow_path(file)
        pq.write_table(arrow.slice(start, count), file_path, filesystem=filesystem, **write_kwargs)
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
        npix_suffix=npix_suffix,
        **TableProperties.new_provenance_dict(root, builder=_builder()),
        **(extra_properties or {}),
    )
    properties.to_properties_file(root)
    return open_catalog(root)


def _builder() -> str:
    from specdiff_catalog import __version__

    return f"specdiff-catalog v{__version__}"


def _prepare_output_dir(root: UPath, overwrite: bool) -> UPath:
    if root.exists() and (root.is_file() or any(root.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty (use overwrite)")
        root.fs.rm(root.path, recursive=root.is_dir())
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- discovery -------------------------------------------------------------------------------


def _hats_catalog(root: UPath) -> Catalog:
    from hats.catalog import PartitionInfo
    from hats.io import paths
    from hats.io.parquet_metadata import pick_metadata_schema_file
    from hats.pixel_math.healpix_pixel_function import get_pixel_argsort

    info = _table_properties(root)
    if info.catalog_type not in INPUT_TYPES:
        raise CatalogError(_not_an_input(root, info))
    with warnings.catch_warnings():  # no partition_info.csv: hats lists the files (and says so)
        warnings.filterwarnings("ignore", "Computing partitions from catalog parquet files")
        try:
            pixels = PartitionInfo.read_from_dir(root).get_healpix_pixels()
        except (KeyError, ValueError, pd.errors.ParserError, pa.ArrowException) as err:
            raise CatalogError(
                f"{paths.get_partition_info_pointer(root)}: not a partition_info.csv with Norder,Npix "
                f"columns ({_one_line(err)})"
            ) from err
    if not pixels:
        raise CatalogError(f"{root}: a HATS catalog with no partitions (no dataset/Norder=*/Dir=*/Npix=*)")
    pixels = [pixels[i] for i in get_pixel_argsort(pixels)]
    suffix = info.npix_suffix
    locations = [paths.pixel_catalog_file(root, p, npix_suffix=suffix) for p in pixels]
    metadata_file = paths.get_parquet_metadata_pointer(root)
    files = _pixel_directory_files(root, locations) if suffix in ("/", "\\") else [(f,) for f in locations]
    counts = _row_counts([f for group in files for f in group], metadata_file)
    partitions = [
        Partition(location, group, p.order, p.pixel, sum(counts[str(f)] for f in group), i)
        for i, (location, group, p) in enumerate(zip(locations, files, pixels, strict=True))
    ]
    schema_file = pick_metadata_schema_file(root)
    schema = _read_schema(schema_file if schema_file is not None else partitions[0].files[0])
    return Catalog(root, "hats", _properties_strings(info), partitions, _data_schema(schema))


def _table_properties(root: UPath):
    """hats' TableProperties of a catalog directory; CatalogError naming the file when it is
    unreadable (not text, not key=value, or missing a property HATS requires)."""
    from hats.catalog import TableProperties

    file = next(root / name for name in PROPERTIES_FILES if (root / name).is_file())
    try:
        return TableProperties.read_from_file(file)
    except (UnicodeDecodeError, ValueError, TypeError) as err:
        raise CatalogError(f"{file}: not a readable HATS properties file ({_one_line(err)})") from err


def _main_catalog(collection: UPath, storage_options: Mapping[str, Any] | None) -> UPath:
    """The main catalog of a HATS collection (its margins and indexes are not read)."""
    from hats.catalog.catalog_collection import CatalogCollection
    from hats.catalog.dataset.collection_properties import CollectionProperties

    file = collection / COLLECTION_FILE
    try:
        properties = CollectionProperties.read_from_file(file)
    except (UnicodeDecodeError, ValueError, TypeError) as err:
        raise CatalogError(f"{file}: not a readable HATS collection file ({_one_line(err)})") from err
    main = CatalogCollection.resolve_inner_path(
        collection, properties.hats_primary_table_url, storage_options=dict(storage_options or {})
    )
    if not main.exists():
        raise FileNotFoundError(f"{main}: the main catalog named in {file} is missing")
    return main


def _not_an_input(root: UPath, info: Any) -> str:
    kind = info.catalog_type
    if kind == "margin":
        return (
            f"{root}: a HATS margin catalog (copies of the objects within {info.margin_threshold} arcsec of "
            f"each pixel of {info.primary_catalog}); photo-z are per object: give the main catalog"
        )
    return f"{root}: a HATS {kind} catalog, not an object or source catalog"


def _properties_strings(info: Any) -> dict[str, str]:
    """The properties as the file spells them (aliases), as strings."""
    return {k: str(v) for k, v in info.model_dump(by_alias=True, exclude_none=True).items()}


def _pixel_directory_files(root: UPath, directories: list[UPath]) -> list[tuple[UPath, ...]]:
    """The Parquet files inside each pixel directory (``hats_npix_suffix=/``), sorted by name,
    from one recursive listing of ``dataset/`` (names starting with . or _ are not data)."""
    dataset = root / "dataset"
    by_directory: dict[str, list[str]] = defaultdict(list)
    for name in dataset.fs.find(dataset.path):
        match = _NPIX_DIR.match(_listed_name(name))
        if match and not name.rsplit("/", 1)[-1].startswith((".", "_")):
            by_directory[match[1]].append(name.rsplit("/", 1)[-1])
    out = []
    for directory in directories:
        names = sorted(by_directory.get(_listed_name(directory.path), []))
        if not names:
            raise FileNotFoundError(f"{directory}: pixel directory listed in the catalog is missing or empty")
        out.append(tuple(directory / name for name in names))
    return out


def _plain_catalog(root: UPath, files: list[UPath]) -> Catalog:
    counts = _row_counts(files, None)
    partitions = [Partition(f, (f,), None, None, counts[str(f)], i) for i, f in enumerate(files)]
    return Catalog(root, "parquet", {}, partitions, _data_schema(_read_schema(files[0])))


def _row_counts(files: list[UPath], metadata_file: UPath | None) -> dict[str, int]:
    """str(file) -> rows, from the combined ``_metadata`` row groups, else from each footer."""
    counts: dict[str, int] = {}
    if metadata_file is not None and metadata_file.is_file():
        meta = _read_metadata(metadata_file)
        by_path: dict[str, int] = defaultdict(int)
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            by_path[_listed_name((metadata_file.parent / group.column(0).file_path).path)] += group.num_rows
        counts = {str(f): by_path[_listed_name(f.path)] for f in files if _listed_name(f.path) in by_path}
    for file in files:
        if str(file) not in counts:
            if not file.is_file():
                raise FileNotFoundError(f"{file}: partition file listed in the catalog is missing")
            counts[str(file)] = _read_metadata(file).num_rows
    return counts


def _arrow_path(file: UPath) -> tuple[str, Any]:
    """(path, filesystem) for pyarrow: a plain local path (pyarrow's own, fast reader), else
    the fsspec filesystem of the URL."""
    return (file.path, None) if is_local(file) else (file.path, file.fs)


def _read_metadata(file: UPath) -> pq.FileMetaData:
    path, filesystem = _arrow_path(file)
    try:
        return pq.read_metadata(path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{file}: unreadable Parquet file ({_one_line(err)})") from err


def _read_schema(file: UPath) -> pa.Schema:
    path, filesystem = _arrow_path(file)
    try:
        return pq.read_schema(path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"{file}: unreadable Parquet file ({_one_line(err)})") from err


def _data_columns(schema: pa.Schema) -> list[str]:
    """Column names without pandas' stored index columns (``__index_level_0__``)."""
    return [name for name in schema.names if not name.startswith("__index_level_")]


def _data_schema(schema: pa.Schema) -> pa.Schema:
    keep = set(_data_columns(schema))
    return pa.schema([f for f in schema if f.name in keep], metadata=schema.metadata)


def _listed_name(path: str) -> str:
    """A filesystem path as fsspec listings spell it (no trailing slash, one leading slash)."""
    return "/" + path.strip("/")


def _one_line(err: BaseException) -> str:
    """An exception as one line (pydantic's: its messages), at most 300 characters."""
    errors = getattr(err, "errors", None)
    if callable(errors):  # a pydantic ValidationError: its messages, without the input echoed
        text = "; ".join(str(e.get("msg", "")) for e in errors())
    else:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    text = text or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def spatial_index(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """(N,) int64 ``_healpix_29`` of ra, dec in degrees (-1 where a coordinate is not finite)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    good = np.isfinite(ra) & np.isfinite(dec)
    index = np.full(ra.shape, -1, dtype=np.int64)
    index[good] = compute_spatial_index(ra[good], dec[good]).astype(np.int64)
    return index
