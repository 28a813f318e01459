"""``prepare``: DESI coadd + redrock files -> a training set, streamed one file at a time.

Each coadd file is read, joined with its redrock file, cut by a ``SpectroSelection`` and
appended to a ``TrainingSetWriter``; only one file is in memory at a time. Kept
spectra whose photometry is unusable stay in the set with their ``Flag`` bits (they
still train the autoencoder; the diffusion job skips NO_PHOTOMETRY rows). A file
that cannot be read is reported by name and the others go on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet, resolve_columns
from specdiff_catalog.features import photometric_features
from specdiff_catalog.flags import Flag, describe
from specdiff_catalog.io.desi import WAVE, read_coadd, read_redrock, redrock_path_for
from specdiff_catalog.io.trainset import TrainingSetWriter
from specdiff_catalog.selection import (
    REJECTION_REASONS,
    WHAT_TO_CHECK,
    SelectionResult,
    SpectroSelection,
    select,
)

COADD_PATTERNS = ("coadd-*.fits", "coadd-*.fits.gz")
# Object-table columns taken from the joined fibermap + redrock table, with the fill
# value used when a file lacks the column.
_CARRIED = {
    "TARGETID": None,
    "Z": None,
    "ZERR": np.nan,
    "ZWARN": None,
    "DELTACHI2": np.nan,
    "SPECTYPE": None,
    "TARGET_RA": np.nan,
    "TARGET_DEC": np.nan,
    "PHOTSYS": "",
    "EBV": np.nan,
}


@dataclass
class PrepareReport:
    """What ``prepare_training_set`` did.

    files_read: coadd files used, relative to the input directory; failed_files:
    {file: one-line reason}; n_spectra: spectra in the files read; n_kept: spectra
    written; rejected: {reason: count}; flagged: {Flag name: count} among the kept;
    notes: one line per file-level oddity that did not stop the file (absent columns);
    selection: the cuts applied; warnings: one line per cut that removed more than
    ``defaults.CUT_WARNING_FRACTION`` of the spectra read (printed to stderr by the CLI,
    recorded in trainset.json).
    """

    out: Path
    files_read: list[str] = field(default_factory=list)
    failed_files: dict[str, str] = field(default_factory=dict)
    n_spectra: int = 0
    n_kept: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))
    flagged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Flag.__members__, 0))
    notes: list[str] = field(default_factory=list)
    selection: SpectroSelection = field(default_factory=SpectroSelection)

    def _percent(self, count: int) -> str:
        return f"{100.0 * count / self.n_spectra:.1f}%" if self.n_spectra else "-"

    @property
    def warnings(self) -> list[str]:
        """One line per cut that removed more than CUT_WARNING_FRACTION of the spectra read."""
        return [
            f"prepare: the {reason} cut removed {count} of {self.n_spectra} spectra "
            f"({self._percent(count)}); {WHAT_TO_CHECK[reason]}"
            for reason, count in self.rejected.items()
            if self.n_spectra and count > defaults.CUT_WARNING_FRACTION * self.n_spectra
        ]

    def summary(self) -> str:
        """A few human-readable lines: what each cut removed (count, share of the spectra read)."""
        z_max = "no upper cut" if self.selection.z_max is None else f"< {self.selection.z_max:g}"
        cuts = {
            "missing_redshift": "no redrock row",
            "fiberstatus": "COADD_FIBERSTATUS != 0",
            "zwarn": "ZWARN != 0",
            "spectype": f"SPECTYPE != {self.selection.spectype}",
            "z_range": f"Z outside >= {self.selection.z_min:g}, {z_max}",
        }
        flagged = ", ".join(f"{k} {v}" for k, v in self.flagged.items() if v) or "none"
        lines = [
            f"training set {self.out}: {self.n_kept} spectra kept of {self.n_spectra} "
            f"from {len(self.files_read)} coadd file(s)",
            "removed by each cut (a spectrum counts under its first failing cut):",
            *(
                f"  {reason:<17} {count:>8} ({self._percent(count)})  {cuts[reason]}"
                for reason, count in self.rejected.items()
            ),
            f"flagged (kept): {flagged}",
            *(f"note: {note}" for note in self.notes),
        ]
        if self.failed_files:
            lines.append(f"{len(self.failed_files)} file(s) failed:")
            lines += [f"  {reason}" for reason in self.failed_files.values()]
        return "\n".join(lines)


def find_coadd_files(desi_dir: str | Path) -> list[Path]:
    """coadd-*.fits(.gz) under ``desi_dir``, recursively, sorted by relative path."""
    desi_dir = Path(desi_dir)
    if not desi_dir.is_dir():
        raise FileNotFoundError(f"{desi_dir}: no such directory")
    files = {p for pattern in COADD_PATTERNS for p in desi_dir.rglob(pattern) if p.is_file()}
    return sorted(files, key=lambda p: p.relative_to(desi_dir).as_posix())


def _photometry_columns(table: pd.DataFrame, bandset: BandSet) -> tuple[dict[str, np.ndarray], list[str]]:
    """The band set's flux/ivar columns (flux 0, ivar 0 = no measurement where a file
    lacks them) and its MW-transmission columns that exist; plus the absent names."""
    wanted = [c for b in bandset.bands for c in (b.flux, b.ivar)]
    found = resolve_columns(table.columns, wanted + [b.mw_transmission for b in bandset.bands])
    absent = [c for c in wanted if c not in found]
    columns = {
        c: (table[found[c]].to_numpy() if c in found else np.zeros(len(table), np.float32)) for c in wanted
    }
    columns |= {
        b.mw_transmission: table[found[b.mw_transmission]].to_numpy()
        for b in bandset.bands
        if b.mw_transmission in found
    }
    return columns, absent


def _objects_table(result: SelectionResult, bandset: BandSet, source: str) -> tuple[pd.DataFrame, list[str]]:
    """Object rows of the kept spectra: redshift, position, photometry, FLAGS, SOURCE_FILE."""
    table = result.table[result.keep].reset_index(drop=True)
    n = len(table)
    found = resolve_columns(table.columns, _CARRIED)
    objects = pd.DataFrame(
        {c: (table[found[c]].to_numpy() if c in found else np.full(n, fill)) for c, fill in _CARRIED.items()}
    )
    photometry, absent = _photometry_columns(table, bandset)
    objects = objects.assign(**photometry)
    objects["FLAGS"] = photometric_features(objects, bandset).flags.astype(np.uint16)
    objects["SOURCE_FILE"] = source
    absent += [c for c, fill in _CARRIED.items() if c not in found and fill is not None]
    return objects, absent


def _one_line(err: BaseException, source: str) -> str:
    message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return message if source in message else f"{source}: {message}"


def prepare_training_set(
    desi_dir: str | Path,
    out: str | Path,
    *,
    bands: str | Path | BandSet = defaults.BANDSET,
    selection: SpectroSelection | None = None,
    overwrite: bool = False,
) -> PrepareReport:
    """Turn every coadd-*.fits under ``desi_dir`` (with its redrock file) into a training set at ``out``.

    Spectra are on ``io.desi.WAVE`` (7781 px, 3600-9824 A, 1e-17 erg/s/cm^2/A); the
    objects table holds TARGETID, Z, ZERR, ZWARN, DELTACHI2, SPECTYPE, TARGET_RA,
    TARGET_DEC, PHOTSYS, EBV, the band set's photometry, FLAGS (uint16) and SOURCE_FILE;
    trainset.json records the band set itself. selection: default ``SpectroSelection()``.
    Raises FileNotFoundError when ``desi_dir`` holds no coadd file; files that cannot
    be read are listed in ``PrepareReport.failed_files``.
    """
    desi_dir = Path(desi_dir)
    selection = selection or SpectroSelection()
    bandset = bands if isinstance(bands, BandSet) else BandSet.load(bands)
    files = find_coadd_files(desi_dir)
    if not files:
        raise FileNotFoundError(f"no coadd-*.fits files under {desi_dir}")
    report = PrepareReport(out=Path(out), selection=selection)
    writer = TrainingSetWriter(out, WAVE, overwrite=overwrite)
    for path in tqdm(files, desc="prepare", unit="file", disable=None):
        source = path.relative_to(desi_dir).as_posix()
        try:
            coadd = read_coadd(path)
            result = select(coadd, read_redrock(redrock_path_for(path)), selection)
            objects, absent = _objects_table(result, bandset, source)
        except (OSError, ValueError, KeyError) as err:
            report.failed_files[source] = _one_line(err, source)
            continue
        if absent:
            report.notes.append(f"{source}: FIBERMAP lacks {', '.join(absent)} (treated as not measured)")
        if len(objects):
            writer.append(coadd.flux[result.keep], coadd.ivar[result.keep], objects)
        report.files_read.append(source)
        report.n_spectra += len(coadd)
        report.n_kept += len(objects)
        for name, count in result.rejected.items():
            report.rejected[name] += count
        for name, count in describe(objects["FLAGS"].to_numpy()).items():
            report.flagged[name] += count
    writer.close(
        {
            "kind": "desi",
            "source_dir": str(desi_dir),
            "selection": dataclasses.asdict(selection),
            "source_files": report.files_read,
            "failed_files": report.failed_files,
            "n_spectra_read": report.n_spectra,
            "rejected": report.rejected,
            "flagged": report.flagged,
            "notes": report.notes,
            "warnings": report.warnings,
        },
        bands=bandset,
    )
    return report
