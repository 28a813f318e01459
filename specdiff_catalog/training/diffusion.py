"""The diffusion training job: training set (+ the model's encoder) in, MODEL/diffusion.safetensors out.

With spectra, every training spectrum is encoded once by the model directory's trained
autoencoder (streamed from the training set in batches; the latents are cached as
``MODEL/training/diffusion/latents.npy``) and the model learns p([latent, t(z)] | photometry).
With ``no_spectra`` (photo-z-only mode) the target is [t(z)] alone and the data can be
a Parquet file of photometry + Z. The arrays of a 1e5-object training set fit in memory,
so batches are drawn from them; the shared loop (``training.loop.fit``) does the rest.
The module the loop trains carries the EMA weights (``DiffusionTrainee``), so they are
checkpointed, resumed and validated with it; the EMA weights are what is saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from specdiff_catalog import defaults
from specdiff_catalog.bands import BandSet
from specdiff_catalog.config import load_preset
from specdiff_catalog.features import Features, photometric_features
from specdiff_catalog.io.trainset import TrainingSet
from specdiff_catalog.metrics import pdf_metrics, point_metrics
from specdiff_catalog.models import load_autoencoder, store
from specdiff_catalog.models.diffusion import DiffusionConfig, DiffusionModel, Standardisation
from specdiff_catalog.models.distill import StudentModel
from specdiff_catalog.models.sampling import concrete_sampler, sample
from specdiff_catalog.summaries import sample_quantiles
from specdiff_catalog.training.augment import drop_bands, perturb_fluxes
from specdiff_catalog.training.coverage import train_coverage
from specdiff_catalog.training.ema import EMA
from specdiff_catalog.training.loop import FitResult, StepResult, TrainConfig, fit

log = logging.getLogger(__name__)

WORKDIR = Path("training") / "diffusion"  # inside MODEL: checkpoints, log.jsonl, latents.npy
LATENTS = "latents.npy"
VAL_REPEATS = 4  # noise draws per validation object in the validation loss (less noise in model selection)
VAL_SAMPLES = 100  # diffusion samples per validation object for the PDF metrics at the end


def load_diffusion_preset(name_or_path: str | Path) -> tuple[DiffusionConfig, TrainConfig]:
    """A bundled preset (tiny, small, photoz, paper) or TOML/JSON file: model keys + a [training] table."""
    data = load_preset("diffusion", name_or_path)
    training = data.pop("training", {})
    return (
        DiffusionConfig.load(name_or_path),
        TrainConfig.from_dict(training, source=f"diffusion preset {name_or_path} [training]"),
    )


@dataclass
class DiffusionData:
    """One split in memory.

    object_id (N,) int64 (TARGETID), z (N,), latent (N, S) float32 (S = 0 without spectra),
    features: ``photometric_features`` of the rows; photometry: the raw band-set columns
    (for flux perturbation), name -> (N,) array.
    """

    object_id: np.ndarray
    z: np.ndarray
    latent: np.ndarray
    features: Features
    photometry: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.z)

    def take(self, rows: np.ndarray) -> DiffusionData:
        f = self.features
        return DiffusionData(
            self.object_id[rows],
            self.z[rows],
            self.latent[rows],
            Features(f.values[rows], f.names, f.missing[rows], f.flags[rows]),
            {k: v[rows] for k, v in self.photometry.items()},
        )


@dataclass
class DiffusionBatch:
    """x0 (n, D) standardised target, features (n, F) with NaN, missing (n, B); seed: of the
    noise of a validation batch (None: the global generator, for training)."""

    x0: np.ndarray
    features: np.ndarray
    missing: np.ndarray
    seed: int | None = None


class DiffusionTrainee(nn.Module):
    """What the loop trains: the model and the EMA of its weights (checkpointed together).

    ``model`` is optimised; ``ema.average`` is the DiffusionModel with averaged weights,
    used for validation and saved at the end.
    """

    def __init__(self, model: DiffusionModel, ema_decay: float):
        super().__init__()
        self.model = model
        self.ema = EMA(model, ema_decay)

    @property
    def averaged(self) -> DiffusionModel:
        return self.ema.average  # type: ignore[return-value]


class DiffusionTask:
    """The loop's view of diffusion training (see ``training.loop.TrainingTask``).

    flux_noise: when > 0, each training batch's fluxes get flux_noise * N(0, 1) / sqrt(ivar)
    more noise before the features are computed (``perturb_fluxes``).
    """

    val_metric = "loss"

    def __init__(
        self,
        train: DiffusionData,
        val: DiffusionData,
        standardisation: Standardisation,
        bandset: BandSet,
        flux_noise: float = 0.0,
    ):
        self.train, self.val = train, val
        self.standardisation, self.bandset, self.flux_noise = standardisation, bandset, flux_noise
        self.x0_train = standardisation.to_standard(train.z, train.latent)
        self.x0_val = standardisation.to_standard(val.z, val.latent)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.train) / batch_size)

    def train_batches(self, batch_size: int, epoch: int, seed: int):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self.train))
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            yield DiffusionBatch(self.x0_train[rows], *self._features(rows, rng))

    def _features(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.flux_noise <= 0:
            return self.train.features.values[rows], self.train.features.missing[rows]
        table = {k: v[rows] for k, v in self.train.photometry.items()}
        for band in self.bandset.bands:
            table[band.flux] = perturb_fluxes(table[band.flux], table[band.ivar], rng, self.flux_noise)
        features = photometric_features(table, self.bandset)
        return features.values, features.missing

    def val_batches(self, batch_size: int):
        rows = np.tile(np.arange(len(self.val)), VAL_REPEATS)
        f = self.val.features
        for lo in range(0, len(rows), batch_size):
            r = rows[lo : lo + batch_size]
            yield DiffusionBatch(self.x0_val[r], f.values[r], f.missing[r], seed=lo)

    def loss(
        self, model: DiffusionTrainee, batch: DiffusionBatch, device: torch.device, train: bool
    ) -> StepResult:
        x0 = torch.as_tensor(batch.x0, device=device)
        if train:  # band dropout, then the loss's own draws, all from the global generator
            missing = torch.as_tensor(batch.missing, dtype=torch.bool, device=device)
            missing = drop_bands(missing, model.model.config.band_dropout, None)
            loss = model.model.loss(x0, batch.features, missing)
        else:  # validate the averaged weights, with the same noise at every epoch
            generator = torch.Generator(device=device).manual_seed(batch.seed or 0)
            loss = model.averaged.loss(x0, batch.features, batch.missing, generator)
        return StepResult(loss=loss)

    def after_step(self, model: DiffusionTrainee) -> None:
        model.ema.update(model.model)


# --- data ----------------------------------------------------------------------------------


def encode_trainset(
    trainset: TrainingSet, model_dir: Path, *, batch_size: int = 512, device: str | torch.device = "cpu"
) -> np.ndarray:
    """(N, S) float32 latents of every spectrum of ``trainset`` (row order), NaN where the
    spectrum is unusable, by ``model_dir``'s trained encoder.

    Spectra stream from the training set ``batch_size`` at a time. The result is cached
    in MODEL/training/diffusion/latents.npy (+ .json with the encoder's sha256 and the
    training set) and reused while both are unchanged.
    """
    cache = model_dir / WORKDIR / LATENTS
    config = store.read_config(model_dir)
    if config.autoencoder is None:
        raise store.ModelDirectoryError(
            f"{model_dir}: the model has no autoencoder (train autoencoder first)"
        )
    key = {
        "autoencoder_sha256": config.autoencoder.weights.sha256,
        "trainset": str(Path(trainset.path).resolve()),
        "n_objects": len(trainset),
    }
    meta = cache.with_suffix(".json")
    if cache.exists() and meta.exists() and json.loads(meta.read_text()) == key:
        return np.load(cache, allow_pickle=False)
    autoencoder = load_autoencoder(model_dir, device, config=config)
    wave = trainset.wave
    latent = np.full((len(trainset), autoencoder.config.latent_size), np.nan, dtype=np.float32)
    start, done = time.perf_counter(), 0
    for batch in trainset.batches(None, batch_size):
        ebv = batch.objects["EBV"].to_numpy() if autoencoder.config.deredden else None
        encoded = autoencoder.encode_spectra(wave, *batch.spectra(), batch.objects["Z"].to_numpy(), ebv)
        latent[batch.rows] = encoded.latent
        done += len(batch.rows)
    log.info("encoded %d spectra in %.0f s", done, time.perf_counter() - start)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, latent, allow_pickle=False)
    meta.write_text(json.dumps(key))
    return latent


@dataclass
class PreparedData:
    """The usable rows of both splits, the skip counts and the fitted standardisation."""

    train: DiffusionData
    val: DiffusionData
    standardisation: Standardisation
    counts: dict[str, int]


def prepare_data(
    trainset: TrainingSet, latent: np.ndarray | None, z_transform: str = "log1p"
) -> PreparedData:
    """The usable rows of each split (``TrainingSet.usable``) and ``Standardisation.fit`` on train.

    latent: (N, S) in row order, or None for photo-z-only; rows whose spectrum could not
    be encoded (NaN latent) are skipped and counted with the others.
    """
    objects = trainset.objects
    n = len(objects)
    lat = np.zeros((n, 0), np.float32) if latent is None else latent[trainset.rows()]
    usable = trainset.usable(lat)
    everything = DiffusionData(
        objects["TARGETID"].to_numpy(np.int64),
        objects["Z"].to_numpy(dtype=np.float64),
        lat.astype(np.float32),
        trainset.features,
        trainset.photometry(),
    )
    train = everything.take(np.flatnonzero(usable.mask & trainset.split("train")))
    val = everything.take(np.flatnonzero(usable.mask & trainset.split("val")))
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"{trainset.path}: needs usable objects in both splits, has {len(train)} train and {len(val)} val"
        )
    counts = {"n_objects": n, "n_train": len(train), "n_val": len(val), **usable.counts()}
    log.info(
        "diffusion data: %d train, %d val; skipped %d without usable photometry (NO_PHOTOMETRY), "
        "%d without a finite Z, %d unusable spectra",
        len(train),
        len(val),
        counts["n_skipped_no_photometry"],
        counts["n_skipped_bad_z"],
        counts["n_skipped_unusable_spectrum"],
    )
    standardisation = Standardisation.fit(
        train.features.values, train.latent, train.z, z_transform=z_transform
    )
    return PreparedData(train, val, standardisation, counts)


# --- validation of the trained model -----------------------------------------------------


def validate_pdfs(
    model: DiffusionModel | StudentModel,
    val: DiffusionData,
    *,
    n_samples: int = VAL_SAMPLES,
    seed: int = defaults.SEED,
    sampler: str = defaults.SAMPLER,
    steps: int | None = None,
) -> dict[str, Any]:
    """Photo-z metrics of the validation split: PDF medians (PointMetrics) and samples (PdfMetrics).

    sampler "auto": a diffusion network with ``defaults.TEACHER_SAMPLER``, a distilled
    student on its own grid (``sampling.concrete_sampler``); the record names the one used.
    """
    start = time.perf_counter()
    sampler = concrete_sampler(model, sampler)
    x = sample(
        model.eval(),
        val.features.values,
        val.features.missing,
        val.object_id,
        n_samples=n_samples,
        seed=seed,
        sampler=sampler,
        steps=steps,
    )
    z_samples = model.to_physical(x)[0].numpy()
    z_median = sample_quantiles(z_samples, [0.5])[:, 0]
    return {
        "point": dataclasses.asdict(point_metrics(z_median, val.z)),
        "pdf": dataclasses.asdict(pdf_metrics(z_samples, val.z, seed=seed)),
        "n_samples": n_samples,
        "sampler": sampler,
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
    }


# --- the job -------------------------------------------------------------------------------


def train_diffusion(
    data: str | Path,
    model_dir: str | Path,
    *,
    preset: str | Path = defaults.PRESET,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    no_spectra: bool = False,
    flux_noise: float = 0.0,
    bands: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after=None,
) -> FitResult:
    """Train the conditional diffusion model on training set ``data`` into ``model_dir``.

    With spectra (default) ``model_dir`` must hold a trained autoencoder, whose encoder
    gives the latent targets; ``no_spectra`` trains on [t(z)] only (data may be a Parquet
    file of photometry + Z, whose band set ``bands`` names: a preset or TOML/JSON file,
    default what the training set records, else ls-grzw1w2). The preset gives
    architecture and training defaults; epochs, batch_size, device and seed override
    them. Checkpoints, log.jsonl and the latent cache go to MODEL/training/diffusion/
    (``resume`` continues there). When all epochs ran, the EMA weights of the best epoch
    are written to MODEL/diffusion.safetensors with the ``diffusion`` section of
    config.json (architecture, standardisation, training summary and validation metrics
    of the PDFs), and the training-set coverage score in its feature space
    (``training.coverage.train_coverage``, default settings). Distilled students of earlier
    diffusion weights are dropped from config.json and their files removed (they no longer
    match their teacher).
    """
    model_dir = Path(model_dir)
    model_config, train_config = load_diffusion_preset(preset)
    train_config = train_config.overridden(epochs=epochs, batch_size=batch_size, device=device, seed=seed)
    trainset = TrainingSet.open(data, bands)
    config = store.read_config(model_dir, missing_ok=True)
    config.check_bands(trainset.bandset, model_dir)
    latent = None
    if not no_spectra:
        if config.autoencoder is None:
            raise ValueError(
                f"{model_dir}: no trained autoencoder to encode the spectra with; "
                "run `train autoencoder` into it first, or use --no-spectra (photo-z only)"
            )
        if not trainset.has_spectra:
            raise ValueError(f"{data}: this training set has no spectra; use --no-spectra (photo-z only)")
        latent = encode_trainset(trainset, model_dir)
    prepared = prepare_data(trainset, latent, model_config.z_transform)
    torch.manual_seed(train_config.seed)
    trainee = DiffusionTrainee(DiffusionModel(model_config, prepared.standardisation), model_config.ema_decay)
    task = DiffusionTask(prepared.train, prepared.val, prepared.standardisation, trainset.bandset, flux_noise)
    job = {
        "model": dataclasses.asdict(model_config),
        "data": str(Path(data).resolve()),
        "no_spectra": no_spectra,
        "flux_noise": flux_noise,
        "latent_size": prepared.standardisation.latent_dim,
    }
    result = fit(
        trainee,
        task,
        train_config,
        model_dir / WORKDIR,
        resume=resume,
        extra=job,
        progress=progress,
        stop_after=stop_after,
    )
    if result.finished:
        model = trainee.averaged.cpu().eval()
        validation = validate_pdfs(model, prepared.val, seed=train_config.seed)
        best = result.history[result.best_epoch]
        record = store.TrainingRecord(
            preset=str(preset),
            data=str(trainset.path),
            seed=train_config.seed,
            seconds=float(sum(r["seconds"] for r in result.history)),
            settings={
                **dataclasses.asdict(train_config),
                "flux_noise": flux_noise,
                "no_spectra": no_spectra,
                "validation_loss": {"best": best["val"]["loss"], "last": result.history[-1]["val"]["loss"]},
            },
            counts=prepared.counts,
            best_step=result.best_epoch,
            steps_run=len(result.history),
            validation=validation,
        )
        section = store.DiffusionSection(
            weights=store.write_tensors(model_dir, store.DIFFUSION_FILE, model.net.state_dict()),
            config=model.config,
            standardisation=model.standardisation,
            n_parameters=sum(p.numel() for p in model.parameters()),
            training=record,
        )
        stale = [] if config.student is None else [s.weights for s in config.student.samplers.values()]
        if stale:
            log.warning(
                "%s: the distilled students were made from the previous diffusion weights; they are "
                "dropped from config.json and their files removed (run `train distill` again)",
                model_dir,
            )
        config = dataclasses.replace(config, diffusion=section, student=None)
        store.write_config(
            model_dir, config.with_training_set(trainset.bandset, trainset.summary, trainset.simulated)
        )
        for weights in stale:
            (model_dir / weights.file).unlink(missing_ok=True)
        train_coverage(model_dir, data)  # the coverage score in this network's feature space
    return result
