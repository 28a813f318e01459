"""The on-disk training set: written by ``prepare``, streamed by the training jobs.

Layout of a training-set directory::

    TRAIN/spectra.zarr      Zarr v3 group: wave (P,) observed-frame Angstrom;
                            flux, ivar (N, P) float32, row-chunked; flux in
                            1e-17 erg/s/cm^2/A
    TRAIN/objects.parquet   one row per spectrum, ROW = its row in spectra.zarr:
                            TARGETID, Z, ZERR, SPLIT ('train' | 'val'),
                            the band set's photometry columns, FLAGS, SOURCE_FILE
    TRAIN/trainset.json     summary: counts, z range, selection, sources, and the band
                            set itself ("bands": the BandSet dict; a set written before
                            this change names a preset instead, which is still read)

A plain Parquet file with photometry and Z (no spectra) opens as a training set too
(band set ``defaults.BANDSET``): the photo-z-only mode trains on it.

``TrainingSet`` is the one view of the data every training job uses: its ``bandset``,
the photometric ``features`` of every object (computed once), the objects' ``flags``
and ``usable``, the one filter of rows a photometric job can learn from.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet
from specdiff_catalog.features import Features, photometric_features
from specdiff_catalog.flags import Flag
from specdiff_catalog.hashing import validation_mask

SPECTRA = "spectra.zarr"
OBJECTS = "objects.parquet"
SUMMARY = "trainset.json"
FLUX_UNIT = "1e-17 erg / (s cm2 Angstrom)"
VALIDATION_FRACTION = 0.1


@dataclass
class Batch:
    """A batch of training objects.

    rows: (n,) row numbers in the training set; objects: their ``objects`` rows.
    flux, ivar: (n, P) float32 observed-frame spectra (None for a photometry-only set).
    """

    rows: np.ndarray
    objects: pd.DataFrame
    flux: np.ndarray | None
    ivar: np.ndarray | None

    def spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """(flux, ivar), each (n, P); a ValueError for a photometry-only set."""
        if self.flux is None or self.ivar is None:
            raise ValueError("this training set has no spectra")
        return self.flux, self.ivar


class TrainingSetWriter:
    """Append spectra and their object rows chunk by chunk; nothing is held beyond a chunk.

    wave: (P,) observed-frame wavelength grid in Angstrom shared by every spectrum.
    """

    def __init__(self, path: str | Path, wave: np.ndarray, *, chunk_rows: int = 256, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise FileExistsError(f"{self.path} exists and is not empty (use overwrite)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.chunk_rows = chunk_rows
        group = zarr.open_group(self.path / SPECTRA, mode="w")
        group.attrs.update({"flux_unit": FLUX_UNIT, "wave_unit": "Angstrom"})
        wave = np.asarray(wave, dtype=np.float64)
        group.create_array("wave", data=wave, dimension_names=("pixel",))
        self._arrays = {
            name: group.create_array(
                name,
                shape=(0, wave.size),
                chunks=(chunk_rows, wave.size),
                dtype="float32",
                dimension_names=("object", "pixel"),
            )
            for name in ("flux", "ivar")
        }
        self._objects: list[pd.DataFrame] = []
        self.n = 0

    def append(self, flux: np.ndarray, ivar: np.ndarray, objects: pd.DataFrame) -> None:
        """Add n spectra: flux, ivar (n, P); objects: n rows with at least TARGETID and Z."""
        if not {"TARGETID", "Z"} <= set(objects.columns):
            raise ValueError("training objects need TARGETID and Z columns")
        n = len(objects)
        if flux.shape[0] != n or ivar.shape != flux.shape:
            raise ValueError(f"flux {flux.shape}, ivar {ivar.shape} and {n} objects disagree")
        for name, data in (("flux", flux), ("ivar", ivar)):
            array = self._arrays[name]
            array.resize((self.n + n, array.shape[1]))
            array[self.n : self.n + n] = data.astype(np.float32)
        self._objects.append(objects.reset_index(drop=True).assign(ROW=np.arange(self.n, self.n + n)))
        self.n += n

    def close(self, summary: dict[str, Any] | None = None, *, bands: BandSet | None = None) -> TrainingSet:
        """Assign the stable split, write objects.parquet and trainset.json (``summary``, the
        band set the photometry columns follow as a dict, the counts); return the set."""
        objects = (
            pd.concat(self._objects, ignore_index=True)
            if self._objects
            else pd.DataFrame(
                {"TARGETID": np.zeros(0, np.int64), "Z": np.zeros(0), "ROW": np.zeros(0, np.int64)}
            )
        )
        summary = dict(summary or {})
        if bands is not None:
            summary["bands"] = bands.to_dict()
        write_objects(self.path, objects, summary)
        return TrainingSet.open(self.path)


def write_objects(path: Path, objects: pd.DataFrame, summary: dict[str, Any]) -> None:
    """Write objects.parquet with its SPLIT column and trainset.json with the counts."""
    val = validation_mask(objects["TARGETID"].to_numpy(), VALIDATION_FRACTION)
    objects = objects.assign(SPLIT=np.where(val, "val", "train"))
    objects.to_parquet(path / OBJECTS, index=False)
    z = objects["Z"].to_numpy()
    counts = {
        "n_objects": len(objects),
        "n_train": int((~val).sum()),
        "n_val": int(val.sum()),
        "z_min": float(z.min()) if len(z) else None,
        "z_max": float(z.max()) if len(z) else None,
        "validation_fraction": VALIDATION_FRACTION,
    }
    (path / SUMMARY).write_text(json.dumps({**summary, **counts}, indent=2, default=str))


@dataclass(frozen=True)
class Usable:
    """Which objects a photometric training job can learn from, and why the others cannot.

    mask: (N,) bool in objects-table order; skipped: reason -> (N,) bool, each unusable
    row under its first reason (no_photometry, bad_z, then unusable_spectrum).
    """

    mask: np.ndarray
    skipped: dict[str, np.ndarray]

    def counts(self) -> dict[str, int]:
        """n_skipped_<reason> for every reason."""
        return {f"n_skipped_{reason}": int(rows.sum()) for reason, rows in self.skipped.items()}


class TrainingSet:
    """A training set on disk, read in batches (see the module docstring for the layout)."""

    def __init__(
        self, path: Path, objects: pd.DataFrame, summary: dict[str, Any], spectra: zarr.Group | None
    ):
        self.path = path
        self.objects = objects
        self.summary = summary
        self._spectra = spectra

    @classmethod
    def open(cls, path: str | Path, bands: str | Path | BandSet | None = None) -> TrainingSet:
        """Open a training-set directory, or a photometry + Z Parquet file (no spectra).

        bands: the band set (preset name, TOML/JSON file or a ``BandSet``) of a Parquet file's
        columns (default ``defaults.BANDSET``); for a directory it must agree with the band set
        ``prepare`` recorded, or ValueError names both.
        """
        path = Path(path)
        if path.is_file():
            objects = pd.read_parquet(path)
            objects.columns = [c.upper() for c in objects.columns]
            if "SPLIT" not in objects:
                val = validation_mask(objects["TARGETID"].to_numpy(), VALIDATION_FRACTION)
                objects["SPLIT"] = np.where(val, "val", "train")
            named = bands.to_dict() if isinstance(bands, BandSet) else str(bands or defaults.BANDSET)
            return cls(path, objects, {"source": str(path), "bands": named}, None)
        if not (path / OBJECTS).exists():
            raise FileNotFoundError(
                f"{path} is not a training set (no {OBJECTS}); make one with `specdiff-catalog prepare`"
            )
        summary = json.loads((path / SUMMARY).read_text()) if (path / SUMMARY).exists() else {}
        spectra = zarr.open_group(path / SPECTRA, mode="r") if (path / SPECTRA).exists() else None
        trainset = cls(path, pd.read_parquet(path / OBJECTS), summary, spectra)
        asked = None if bands is None else (bands if isinstance(bands, BandSet) else BandSet.load(bands)).name
        if asked is not None and asked != trainset.bandset.name:
            raise ValueError(f"{path} was prepared with band set {trainset.bandset.name!r}, not {asked!r}")
        return trainset

    def __len__(self) -> int:
        return len(self.objects)

    @cached_property
    def bandset(self) -> BandSet:
        """The band set of the photometry columns: trainset.json's ``bands`` (a band-set dict;
        a preset name in sets written before format 2, or under the older key ``band_set``),
        ``defaults.BANDSET`` when it names none (a plain Parquet file)."""
        bands = self.summary.get("bands", self.summary.get("band_set", defaults.BANDSET))
        if isinstance(bands, dict):
            return BandSet.from_dict(bands, source=f"{self.path} bands")
        return BandSet.load(bands)

    @cached_property
    def features(self) -> Features:
        """``photometric_features`` of every object (objects-table order), computed once."""
        return photometric_features(self.objects, self.bandset)

    @cached_property
    def flags(self) -> np.ndarray:
        """(N,) uint16 ``Flag`` bits: the features' and those ``prepare`` stored (FLAGS)."""
        stored = self.objects["FLAGS"].to_numpy(dtype=np.uint16) if "FLAGS" in self.objects else np.uint16(0)
        return (self.features.flags | stored).astype(np.uint16)

    @property
    def simulated(self) -> bool | None:
        """Whether the data are simulated, when trainset.json says (None: it does not)."""
        value = self.summary.get("simulated")
        return None if value is None else bool(value)

    def split(self, name: str) -> np.ndarray:
        """(N,) bool: the objects of split ``name`` ('train' or 'val'), objects-table order."""
        return (self.objects["SPLIT"] == name).to_numpy()

    def usable(self, latent: np.ndarray | None = None) -> Usable:
        """The one usable-rows filter: photometry (not NO_PHOTOMETRY), a finite Z > -1 and,
        with ``latent`` ((N, S) in objects-table order), a finite latent (an encodable spectrum)."""
        no_photometry = (self.flags & np.uint16(Flag.NO_PHOTOMETRY)) != 0
        z = self.objects["Z"].to_numpy(dtype=np.float64)
        bad_z = ~no_photometry & ~(np.isfinite(z) & (z > -1))
        skipped = {"no_photometry": no_photometry, "bad_z": bad_z}
        if latent is not None:
            skipped["unusable_spectrum"] = ~no_photometry & ~bad_z & ~np.isfinite(latent).all(axis=1)
        return Usable(mask=~np.logical_or.reduce(list(skipped.values())), skipped=skipped)

    def photometry(self) -> dict[str, np.ndarray]:
        """The band set's raw columns present in the objects table (name -> (N,) array),
        what ``photometric_features`` reads: fluxes, ivars, MW transmissions, EBV."""
        upper = {c.upper(): c for c in self.objects.columns}
        return {
            n: self.objects[upper[n.upper()]].to_numpy() for n in self.bandset.columns() if n.upper() in upper
        }

    @property
    def has_spectra(self) -> bool:
        return self._spectra is not None

    def _array(self, name: str) -> zarr.Array:
        """spectra.zarr's array ``name``; a ValueError for a photometry-only set."""
        node = None if self._spectra is None else self._spectra[name]
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{self.path}: this training set has no spectra ({SPECTRA}/{name})")
        return node

    @property
    def wave(self) -> np.ndarray:
        """(P,) observed-frame wavelength grid, Angstrom."""
        return np.asarray(self._array("wave")[...])

    @property
    def chunk_rows(self) -> int:
        return self._array("flux").chunks[0] if self.has_spectra else len(self)

    def rows(self, split: str | None = None) -> np.ndarray:
        """Row numbers of one split ('train' or 'val'), or of every object."""
        objects = self.objects if split is None else self.objects[self.objects["SPLIT"] == split]
        return objects["ROW"].to_numpy() if "ROW" in objects else objects.index.to_numpy()

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """flux, ivar (n, P) float32 of the given rows; only their chunks are read."""
        selection = (np.asarray(rows), slice(None))
        flux, ivar = (
            np.asarray(self._array(n).get_orthogonal_selection(selection)) for n in ("flux", "ivar")
        )
        return flux, ivar

    def batches(
        self,
        split: str | None,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        buffer_chunks: int = 8,
    ) -> Iterator[Batch]:
        """Stream batches of one split.

        Memory stays at ``buffer_chunks`` storage chunks: with ``shuffle``, the chunk
        order is permuted and rows are shuffled within a window of chunks
        (a windowed shuffle, as in WebDataset). Rows left over at the end of a window
        are carried into the next, so every batch but the last has ``batch_size`` rows
        and an epoch has exactly ceil(len(rows(split)) / batch_size) batches.
        """
        rng = np.random.default_rng(seed)
        n, step = len(self), self.chunk_rows
        wanted = np.zeros(n, dtype=bool)
        wanted[self.rows(split)] = True
        by_row = self.objects.set_index("ROW", drop=False) if "ROW" in self.objects else self.objects
        starts = np.arange(0, n, step)
        if shuffle:
            starts = rng.permutation(starts)
        windows = np.array_split(starts, max(1, -(-starts.size // buffer_chunks)))
        rows, spectra = np.zeros(0, dtype=np.int64), None  # carried over: fewer than batch_size rows
        for k, window in enumerate(windows):
            slabs = [slice(int(s), min(int(s) + step, n)) for s in window]
            buffer_rows = np.concatenate([np.arange(sl.start, sl.stop) for sl in slabs])
            positions = np.flatnonzero(wanted[buffer_rows])
            if shuffle:
                positions = rng.permutation(positions)
            if self.has_spectra and positions.size:
                new = [
                    np.concatenate([np.asarray(self._array(name)[sl]) for sl in slabs])[positions]
                    for name in ("flux", "ivar")
                ]
                spectra = (
                    new
                    if spectra is None
                    else [np.concatenate([a, b]) for a, b in zip(spectra, new, strict=True)]
                )
            rows = np.concatenate([rows, buffer_rows[positions]])
            end = rows.size if k == len(windows) - 1 else rows.size // batch_size * batch_size
            for i in range(0, end, batch_size):
                yield Batch(
                    rows=rows[i : i + batch_size],
                    objects=by_row.loc[rows[i : i + batch_size]].reset_index(drop=True),
                    flux=None if spectra is None else spectra[0][i : i + batch_size],
                    ivar=None if spectra is None else spectra[1][i : i + batch_size],
                )
            rows = rows[end:]
            spectra = None if spectra is None else [a[end:] for a in spectra]
