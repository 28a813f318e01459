"""Spectra from photometry: decode the stored latents of selected objects into spectra, with Dn4000.

``run`` stores, per object, the spectral latent of its posterior (``latent``: the latent
mean of the samples near the redshift mode). The model's decoder turns it into a
rest-frame spectrum on the model's rest grid; ``reconstruct_spectra`` does that for a
selection of objects (ids, a row range or a seeded random sample), optionally
redshifts each spectrum to its z_median or z_mode and resamples it onto an observed
grid (the DESI grid by default), and measures Dn4000 (``spectral.dn4000``).

Flux is F_lambda in units of its median over the rest-frame window
``config.norm_window`` (5300-5850 A) of the decoded spectrum ("window" models: the
decoder was trained in units of the observed spectrum's median there): the latent
carries the shape of a spectrum, not its amplitude. Objects without a latent (flagged,
NaN) get NaN spectra and Dn4000.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from specdiff_catalog import __version__, defaults, spectral
from specdiff_catalog.io.spectra_file import ReconstructedSpectra
from specdiff_catalog.io.store import OutputStore, open_store

if TYPE_CHECKING:
    from specdiff_catalog.models.autoencoder import SpectrumAutoencoder
    from specdiff_catalog.models.store import ModelConfig

REDSHIFTS = ("median", "mode")
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
OBSERVED_GRIDS = ("desi", "model")


@dataclass(frozen=True)
class ObjectSelection:
    """Which objects: ``ids`` (object ids, in that order), ``rows`` (start, stop) of the
    store's written objects in store order (padding rows do not count), or ``random``
    objects drawn without replacement with ``seed``. Exactly one is set."""

    ids: tuple[int, ...] | None = None
    rows: tuple[int, int] | None = None
    random: int | None = None
    seed: int = defaults.SEED

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.ids, self.rows, self.random)]
        if sum(given) != 1:
            raise ValueError("select objects by exactly one of ids, rows or random")
        if self.rows is not None and not 0 <= self.rows[0] < self.rows[1]:
            raise ValueError(f"row range must be START:STOP with 0 <= START < STOP, got {self.rows}")
        if self.random is not None and self.random < 1:
            raise ValueError(f"random sample size must be >= 1, got {self.random}")
        if self.ids is not None and not self.ids:
            raise ValueError("ids= names no object id")
        outside = [i for i in self.ids or () if not _INT64_MIN <= i <= _INT64_MAX]
        if outside:
            raise ValueError(
                f"object id(s) {', '.join(map(str, outside[:5]))} outside the int64 range of the store's "
                "object_id (-2^63 .. 2^63 - 1): no object has them"
            )

    @classmethod
    def parse(cls, text: str, seed: int = defaults.SEED) -> ObjectSelection:
        """From the command line: ``ids=ID,ID,...``, ``ids=@FILE`` (one id per line),
        ``rows=START:STOP`` or ``random=N``."""
        kind, _, value = text.partition("=")
        try:
            if kind == "ids":
                items = Path(value[1:]).read_text().split() if value.startswith("@") else value.split(",")
                return cls(ids=tuple(int(v) for v in items if v.strip()))
            if kind == "rows":
                start, _, stop = value.partition(":")
                return cls(rows=(int(start), int(stop)))
            if kind == "random":
                return cls(random=int(value), seed=seed)
        except ValueError as err:
            raise ValueError(f"cannot read the selection {text!r}: {err}") from err
        raise ValueError(f"selection {text!r}: use ids=ID,ID,... | ids=@FILE | rows=START:STOP | random=N")


def select_rows(store: OutputStore, selection: ObjectSelection) -> np.ndarray:
    """(n,) store row indices of the selected objects: object rows of done partitions only
    (padding rows and rows of failed or pending partitions are never selected).

    ids: in the order given; an id that is not in the store is a ValueError naming it.
    rows / random: in store order; a row range past the last written object is a ValueError.
    """
    if selection.ids is not None:
        wanted = np.asarray(selection.ids, dtype=np.int64)
        found = np.full(wanted.size, -1, dtype=np.int64)
        for rows, block in store.blocks(["object_id", "valid"]):
            results = np.flatnonzero(store.result_mask(rows, block["valid"]))
            if results.size == 0:
                continue
            ids = block["object_id"][results]
            order = np.argsort(ids, kind="stable")
            at = order[np.clip(np.searchsorted(ids, wanted, sorter=order), 0, ids.size - 1)]
            hit = (ids[at] == wanted) & (found < 0)
            found[hit] = rows.start + results[at[hit]]
        if (found < 0).any():
            missing = wanted[found < 0]
            raise ValueError(
                f"{store.path}: {missing.size} object id(s) not in the store's done partitions: "
                f"{', '.join(map(str, missing[:10]))}{' ...' if missing.size > 10 else ''}"
            )
        return found
    n_written = sum(int(store.result_mask(r, b["valid"]).sum()) for r, b in store.blocks(["valid"]))
    if selection.rows is not None:
        start, stop = selection.rows
        if stop > n_written:
            raise ValueError(
                f"{store.path}: rows={start}:{stop} goes past the end: the store has {n_written} written "
                f"objects (rows 0:{n_written})"
            )
        return _written_rows(store, np.arange(start, stop))
    rng = np.random.default_rng(selection.seed)
    return _written_rows(
        store, np.sort(rng.choice(n_written, size=min(selection.random or 0, n_written), replace=False))
    )


def _written_rows(store: OutputStore, positions: np.ndarray) -> np.ndarray:
    """Store rows of the written objects number ``positions`` (sorted, 0-based, in store order,
    padding not counted); positions past the last object are dropped. Reads ``valid`` block by block."""
    out = np.empty(positions.size, dtype=np.int64)
    seen = done = 0
    for rows, block in store.blocks(["valid"]):
        written = np.flatnonzero(store.result_mask(rows, block["valid"]))
        upto = int(np.searchsorted(positions, seen + written.size))
        out[done:upto] = rows.start + written[positions[done:upto] - seen]
        done, seen = upto, seen + written.size
        if done == positions.size:
            break
    return out[:done]


def store_model_dir(store: OutputStore, model_dir: str | Path | None = None) -> Path:
    """The model that wrote ``store``: ``model_dir`` or the store's ``model_path``, checked by sha256.

    Raises ValueError when its id (sha256 of config.json) is not the store's ``model``
    attribute, FileNotFoundError when the recorded model directory is gone.
    """
    from specdiff_catalog.models.store import CONFIG, model_id

    path = Path(model_dir if model_dir is not None else store.attrs.get("model_path", ""))
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(
            f"{path}: no model directory (the store's model_path); pass the model with --model"
        )
    expected, actual = store.attrs.get("model"), model_id(path)
    if actual != expected:
        raise ValueError(
            f"{path} (id {actual[:12]}...) is not the model that wrote {store.path} "
            f"(id {str(expected)[:12]}...); pass that model with --model"
        )
    return path


def observed_grid(name: str | np.ndarray, autoencoder: SpectrumAutoencoder) -> np.ndarray:
    """(P,) observed-frame grid, Angstrom: "desi" (the 7781-pixel DESI grid), "model"
    (the autoencoder's observed grid) or an array."""
    if isinstance(name, str):
        if name == "desi":
            from specdiff_catalog.io.desi import WAVE

            return np.asarray(WAVE, dtype=np.float64)
        if name == "model":
            return autoencoder.wave_obs.cpu().numpy().astype(np.float64)
        raise ValueError(f"observed grid {name!r}: use one of {OBSERVED_GRIDS} or an array")
    return np.asarray(name, dtype=np.float64)


def decode(autoencoder: SpectrumAutoencoder, latent: np.ndarray) -> np.ndarray:
    """(n, L) rest-frame spectra of latents (n, S); NaN rows where a latent is not finite."""
    latent = np.asarray(latent, dtype=np.float32)
    ok = np.isfinite(latent).all(axis=1)
    flux = np.full((latent.shape[0], autoencoder.wave_rest.numel()), np.nan, dtype=np.float32)
    if ok.any():
        flux[ok] = autoencoder.decode_latents(latent[ok])
    return flux


def reconstruct_spectra(
    store_path: str | Path,
    selection: ObjectSelection,
    *,
    model_dir: str | Path | None = None,
    redshift: str = "median",
    observed: str | np.ndarray | None = None,
) -> ReconstructedSpectra:
    """Decode the stored latents of the selected objects of an output store.

    model_dir: the model that wrote the store (default: the store's ``model_path``;
    its sha256 must match). redshift: "median" or "mode", the z the observed-frame
    spectra are placed at. observed: None (rest frame only), "desi", "model" or a (P,)
    grid in Angstrom.
    """
    from specdiff_catalog.models import load_autoencoder
    from specdiff_catalog.models.store import read_config

    if redshift not in REDSHIFTS:
        raise ValueError(f"redshift must be one of {REDSHIFTS}, got {redshift!r}")
    store = open_store(store_path, mode="r")
    if "latent" not in store.group:
        raise ValueError(f"{store_path}: the store has no latents (its model has no autoencoder)")
    path = store_model_dir(store, model_dir)
    config = read_config(path)
    autoencoder = load_autoencoder(path, config=config)
    rows = select_rows(store, selection)
    order = np.argsort(rows, kind="stable")  # zarr reads sorted coordinates
    columns = {}
    for name in ("object_id", "flags", "z_median", "z_mode", "latent"):
        values = store.read(name, rows[order])
        columns[name] = np.empty_like(values)
        columns[name][order] = values
    return decode_spectra(
        autoencoder,
        columns["latent"],
        object_id=columns["object_id"],
        row=rows,
        flags=columns["flags"],
        z_median=columns["z_median"],
        z_mode=columns["z_mode"],
        redshift=redshift,
        observed=observed,
        provenance=_provenance(store, path, config),
    )


def decode_spectra(
    autoencoder: SpectrumAutoencoder,
    latent: np.ndarray,
    *,
    object_id: np.ndarray,
    row: np.ndarray,
    flags: np.ndarray,
    z_median: np.ndarray,
    z_mode: np.ndarray,
    redshift: str = "median",
    observed: str | np.ndarray | None = None,
    provenance: dict[str, Any] | None = None,
) -> ReconstructedSpectra:
    """Spectra of n objects from their latents (n, S): rest-frame spectra on the model's
    rest grid, Dn4000 and, with ``observed`` ("desi", "model" or a (P,) grid in Angstrom),
    the spectra redshifted to z_median or z_mode (``redshift``) on that grid. object_id,
    row, flags, z_median, z_mode: (n,) carried into the result; NaN latents give NaN spectra."""
    if redshift not in REDSHIFTS:
        raise ValueError(f"redshift must be one of {REDSHIFTS}, got {redshift!r}")
    wave_rest = autoencoder.rest_wave()
    flux_rest = decode(autoencoder, latent)
    z = (z_median if redshift == "median" else z_mode).astype(np.float64)
    result = ReconstructedSpectra(
        object_id=object_id,
        row=row,
        flags=flags,
        z_median=z_median,
        z_mode=z_mode,
        redshift=redshift,
        z=z,
        wave_rest=wave_rest,
        flux_rest=flux_rest,
        dn4000=spectral.dn4000(wave_rest, flux_rest),
        norm_window=autoencoder.config.norm_window,
        provenance=provenance or {},
    )
    if observed is not None:
        from specdiff_catalog.models.autoencoder import redshift_spectra

        result.wave_obs = observed_grid(observed, autoencoder)
        result.flux_obs = redshift_spectra(wave_rest, flux_rest, z, result.wave_obs).astype(np.float32)
    return result


def _provenance(store: OutputStore, model_dir: Path, config: ModelConfig) -> dict[str, Any]:
    return {
        "store": str(store.path),
        "model": store.attrs.get("model"),
        "model_path": str(model_dir),
        "simulated": config.provenance.simulated,  # None: not recorded
        "software_version": __version__,
        "deredden": config.autoencoder is not None and config.autoencoder.config.deredden,
    }
