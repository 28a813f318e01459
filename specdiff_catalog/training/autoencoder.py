"""The autoencoder training job: training set in, MODEL/autoencoder.safetensors out.

Spectra stream from the on-disk training set; each batch is rebinned and normalised
on the fly (``models.autoencoder.prepare_spectra``) in the loop's prefetch thread.
The loss is the ivar-weighted chi^2 per valid pixel of the batch (for the "amplitude"
normalisation against the best-amplitude model of each spectrum),
plus SPENDER-II's redshift-augmentation consistency loss when the preset turns it on.
Spectra the normalisation cannot handle (``spectral.SpectrumFlag.skip()``: with
"amplitude" only those without a valid pixel) are skipped: their ivar is zeroed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specdiff_catalog import defaults
from specdiff_catalog.config import ConfigError, load_preset
from specdiff_catalog.io.trainset import Batch, TrainingSet
from specdiff_catalog.models import store
from specdiff_catalog.models.autoencoder import (
    AutoencoderConfig,
    SpectrumAutoencoder,
    chi2,
    consistency_loss,
    prepare_spectra,
    rest_grid,
    shift_redshift,
)
from specdiff_catalog.spectral import SpectrumFlag, rebin
from specdiff_catalog.training.loop import FitResult, StepResult, TrainConfig, fit

WORKDIR = Path("training") / "autoencoder"  # inside MODEL: checkpoints and log.jsonl


@dataclass
class SpectraBatch:
    """A prepared batch: flux, ivar (n, P) normalised (ivar 0 for skipped spectra), z (n,), skipped (n,)."""

    flux: np.ndarray
    ivar: np.ndarray
    z: np.ndarray
    skipped: np.ndarray


def load_autoencoder_preset(name_or_path: str | Path) -> tuple[AutoencoderConfig, TrainConfig]:
    """A bundled preset (tiny, small, paper) or a TOML/JSON file with [model] and [training] tables."""
    data = load_preset("autoencoder", name_or_path)
    unknown = set(data) - {"model", "training"}
    if unknown:
        raise ConfigError(
            f"autoencoder preset {name_or_path}: unknown table(s) {sorted(unknown)}; use [model], [training]"
        )
    source = f"autoencoder preset {name_or_path}"
    return (
        AutoencoderConfig.from_dict(data.get("model", {}), source=f"{source} [model]"),
        TrainConfig.from_dict(data.get("training", {}), source=f"{source} [training]"),
    )


class AutoencoderTask:
    """The loop's view of autoencoder training (see ``training.loop.TrainingTask``)."""

    val_metric = "chi2_per_pixel"

    def __init__(self, trainset: TrainingSet, config: AutoencoderConfig):
        if config.deredden and "EBV" not in trainset.objects.columns:
            raise ValueError(
                f"{trainset.path}: no EBV column to de-redden the spectra with; "
                "set deredden = false in the preset's [model] table"
            )
        self.trainset = trainset
        self.config = config
        self.wave = trainset.wave

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.trainset.rows("train")) / batch_size)

    def _prepare(self, batch: Batch) -> SpectraBatch:
        ebv = batch.objects["EBV"].to_numpy() if self.config.deredden else None
        flux, ivar = batch.spectra()
        prepared = prepare_spectra(
            self.config, None, self.wave, flux, ivar, batch.objects["Z"].to_numpy(), ebv
        )
        skipped = (prepared.flags & SpectrumFlag.skip()) != 0
        return SpectraBatch(
            prepared.flux,
            np.where(skipped[:, None], 0.0, prepared.ivar).astype(np.float32),
            prepared.z,
            skipped,
        )

    def train_batches(self, batch_size: int, epoch: int, seed: int):
        epoch_seed = np.random.SeedSequence([seed, epoch]).generate_state(1)[0]
        return (
            self._prepare(b)
            for b in self.trainset.batches("train", batch_size, shuffle=True, seed=int(epoch_seed))
        )

    def val_batches(self, batch_size: int):
        return (self._prepare(b) for b in self.trainset.batches("val", batch_size))

    def loss(
        self, model: SpectrumAutoencoder, batch: SpectraBatch, device: torch.device, train: bool
    ) -> StepResult:
        flux, ivar, z = (torch.as_tensor(a, device=device) for a in (batch.flux, batch.ivar, batch.z))
        latent, _, observed, inside = model(flux, ivar, z)  # "amplitude": observed at the best amplitude
        chi2_sum, n_valid = chi2(flux, ivar, observed, inside)
        loss = chi2_sum.sum() / n_valid.sum().clamp_min(1)
        n = torch.tensor(float(len(z)))
        spread = latent.detach().float().std(dim=0, correction=0).mean()  # collapse shows as spread -> 0
        metrics: dict[str, tuple[torch.Tensor | float, torch.Tensor | float]] = {
            "chi2_per_pixel": (chi2_sum.sum(), n_valid.sum()),
            "skipped": (float(batch.skipped.sum()), n),
            "latent_std": (spread * n, n),
        }
        if self.config.consistency:
            used = torch.as_tensor(~batch.skipped, device=device)
            penalty = self._consistency(model, flux, ivar, z, latent, train) * used
            loss = loss + self.config.consistency_weight * penalty.sum() / used.sum().clamp_min(1)
            metrics["consistency"] = (penalty.sum(), used.sum())
        return StepResult(loss=loss, metrics=metrics)

    def _consistency(
        self,
        model: SpectrumAutoencoder,
        flux: torch.Tensor,
        ivar: torch.Tensor,
        z: torch.Tensor,
        latent: torch.Tensor,
        train: bool,
    ) -> torch.Tensor:
        """SPENDER-II: encode the same spectra moved to random redshifts in the training range."""
        generator = None if train else torch.Generator(device=z.device).manual_seed(0)  # fixed for validation
        lo, hi = model.z_range.tolist()
        z_new = lo + (hi - lo) * torch.rand(z.shape, device=z.device, generator=generator)
        flux_new, valid_new = shift_redshift(model.wave_obs, flux, ivar > 0, z, z_new)
        latent_new = model.encode(flux_new, valid_new.to(flux.dtype), z_new)
        return consistency_loss(latent, latent_new, self.config.consistency_tol)


def build_autoencoder(trainset: TrainingSet, config: AutoencoderConfig) -> SpectrumAutoencoder:
    """A fresh model whose grids follow the training set: its rebinned grid and z range.

    With the "amplitude" normalisation the norm window (where decoded spectra have unit
    median) must lie on the rest grid; a ValueError says which window would.
    """
    z = trainset.objects["Z"].to_numpy()
    z_range = (float(z.min()), float(z.max()))
    wave_obs = rebin(
        trainset.wave, np.zeros((1, trainset.wave.size)), np.zeros((1, trainset.wave.size)), config.rebin
    )[0]
    wave_rest = rest_grid(wave_obs, *z_range, config.rest_step)
    lo, hi = config.norm_window
    if config.normalisation == "amplitude" and not (wave_rest[0] <= lo < hi <= wave_rest[-1]):
        raise ValueError(
            f"{trainset.path}: the normalisation window {lo:g}-{hi:g} A is not on the rest grid "
            f"{wave_rest[0]:.0f}-{wave_rest[-1]:.0f} A of redshifts {z_range[0]:.3f}-{z_range[1]:.3f}; "
            "set norm_window in the preset's [model] table to a window inside it"
        )
    return SpectrumAutoencoder(config, wave_obs, wave_rest, z_range)


def autoencoder_section(
    model: SpectrumAutoencoder,
    weights: store.WeightFile,
    trainset: TrainingSet,
    data: str | Path,
    result: FitResult,
    train_config: TrainConfig,
    preset: str | Path,
) -> store.AutoencoderSection:
    """The ``autoencoder`` section of config.json: weights, architecture, grids, training record."""
    wave_obs, wave_rest = model.wave_obs.cpu().numpy(), model.wave_rest.cpu().numpy()
    z_lo, z_hi = model.z_range.tolist()
    return store.AutoencoderSection(
        weights=weights,
        config=model.config,
        n_parameters=model.n_parameters,
        observed_grid=store.Grid(float(wave_obs[0]), float(wave_obs[-1]), int(wave_obs.size)),
        instrument_pixels=int(trainset.wave.size),
        rest_grid=store.Grid(float(wave_rest[0]), float(wave_rest[-1]), int(wave_rest.size)),
        z_range=(z_lo, z_hi),
        training=store.TrainingRecord(
            preset=str(preset),
            data=str(data),
            seed=train_config.seed,
            seconds=float(sum(r["seconds"] for r in result.history)),
            settings=dataclasses.asdict(train_config),
            counts={"n_train": len(trainset.rows("train")), "n_val": len(trainset.rows("val"))},
            best_step=result.best_epoch,
            steps_run=len(result.history),
            validation={"best": result.history[result.best_epoch]["val"], "last": result.history[-1]["val"]},
        ),
    )


def train_autoencoder(
    data: str | Path,
    out: str | Path,
    *,
    preset: str | Path = defaults.PRESET,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    consistency: bool | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after=None,
) -> FitResult:
    """Train the autoencoder on training set ``data``; write it into model directory ``out``.

    The preset gives the architecture and training defaults; epochs, batch_size, device,
    seed and consistency override them. Checkpoints and log.jsonl go to out/training/autoencoder/;
    ``resume`` continues from there. When all epochs ran, the best epoch's weights are
    written to out/autoencoder.safetensors and config.json gets the ``autoencoder`` section
    and the training set's band set and summary (``models.store``). Returns the loop's FitResult.
    """
    model_config, train_config = load_autoencoder_preset(preset)
    train_config = train_config.overridden(epochs=epochs, batch_size=batch_size, device=device, seed=seed)
    if consistency is not None:
        model_config = dataclasses.replace(model_config, consistency=consistency)
    trainset = TrainingSet.open(data)
    if not trainset.has_spectra:
        raise ValueError(f"{data}: this training set has no spectra; the autoencoder needs them")
    config = store.read_config(out, missing_ok=True)
    config.check_bands(trainset.bandset, out)
    torch.manual_seed(train_config.seed)
    model = build_autoencoder(trainset, model_config)
    job = {"model": model_config.to_dict(), "data": str(Path(data).resolve())}
    result = fit(
        model,
        AutoencoderTask(trainset, model_config),
        train_config,
        Path(out) / WORKDIR,
        resume=resume,
        extra=job,
        progress=progress,
        stop_after=stop_after,
    )
    if result.finished:
        model = model.cpu()
        weights = store.write_tensors(out, store.AUTOENCODER_FILE, model.state_dict())
        section = autoencoder_section(model, weights, trainset, data, result, train_config, preset)
        config = dataclasses.replace(config, autoencoder=section)
        store.write_config(
            out, config.with_training_set(trainset.bandset, trainset.summary, trainset.simulated)
        )
    return result
