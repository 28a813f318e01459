"""The model directory: its typed schema, and the only code that reads or writes its files.

Layout (docs/formats.md)::

    MODEL/config.json              ModelConfig, format_version 2 (below)
    MODEL/autoencoder.safetensors  tensors of the spectrum autoencoder
    MODEL/diffusion.safetensors    tensors of the conditional diffusion network
    MODEL/baseline.cbm             the gradient-boosted baseline (CatBoost's FlatBuffers format)
    MODEL/coverage.safetensors     the training-set sample the coverage score compares with
    MODEL/student-N.safetensors    distilled N-evaluation samplers, when trained (``StudentSection``)

config.json holds one JSON object per ``ModelConfig`` field; each component section names
its file and that file's sha256 under the same key, ``weights``. The model classes never
touch files: they are built from (and give back) state dicts and typed configs, and this
module writes the files atomically (a temporary file renamed into place), records their
sha256 and checks it before anything is parsed. Nothing is ever unpickled. A version-1
config.json (software 0.1.0) is migrated on reading (``_migrate_v1``).

Adding a section is one frozen dataclass and one ``ModelConfig`` field: the JSON codec
below walks the type hints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specdiff_catalog import __version__
from specdiff_catalog.bands import BandSet
from specdiff_catalog.config import ConfigError
from specdiff_catalog.io.paths import write_atomic
from specdiff_catalog.models.autoencoder import AutoencoderConfig
from specdiff_catalog.models.baseline import BaselineConfig, BaselineModel
from specdiff_catalog.models.coverage import CoverageConfig
from specdiff_catalog.models.diffusion import DiffusionConfig, Standardisation

if TYPE_CHECKING:
    import catboost
    import torch

CONFIG = "config.json"
FORMAT_VERSION = 2
AUTOENCODER_FILE = "autoencoder.safetensors"
DIFFUSION_FILE = "diffusion.safetensors"
BASELINE_FILE = "baseline.cbm"
COVERAGE_FILE = "coverage.safetensors"


def student_file(evaluations: int) -> str:
    """The file of the ``evaluations``-evaluation distilled student."""
    return f"student-{evaluations}.safetensors"


class ModelDirectoryError(ValueError):
    """A model directory that is missing, incomplete, altered or of an unknown format."""


# --- the schema ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFile:
    """A file of the model directory (``file``, relative to it) and its hex ``sha256``."""

    file: str
    sha256: str


@dataclass(frozen=True)
class TrainingRecord:
    """How a component was trained: for people and reports; no code path depends on it.

    preset: preset name or file; data: the training set as given to the job; seed;
    seconds: wall time of the fit; settings: the job's hyper-parameters (the training
    loop's TrainConfig fields, flux_noise, ...); counts: objects used and skipped
    (n_objects, n_train, n_val, n_skipped_*); best_step: the epoch (for the baseline: the
    tree count) whose weights were kept; steps_run: epochs run; validation: metrics on
    the validation split (point and PDF metrics, chi^2 per pixel, ...).
    """

    preset: str
    data: str
    seed: int
    seconds: float
    settings: Mapping[str, Any] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    best_step: int | None = None
    steps_run: int | None = None
    validation: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """An evenly spaced wavelength grid: ``n`` points from ``min`` to ``max`` Angstrom."""

    min: float
    max: float
    n: int


@dataclass(frozen=True)
class AutoencoderSection:
    """The spectrum autoencoder: its weights, architecture and grids.

    observed_grid: the model's observed grid (the instrument grid of ``instrument_pixels``
    pixels rebinned by ``config.rebin``); rest_grid: the decoder's rest-frame grid;
    z_range: the training redshift range the rest grid covers. The grids themselves are
    buffers in the weight file; these are their summaries.
    """

    weights: WeightFile
    config: AutoencoderConfig
    n_parameters: int
    observed_grid: Grid
    instrument_pixels: int
    rest_grid: Grid
    z_range: tuple[float, float]
    training: TrainingRecord | None = None

    @property
    def latent_size(self) -> int:
        return self.config.latent_size


@dataclass(frozen=True)
class DiffusionSection:
    """The conditional diffusion network: weights, architecture and standardisation."""

    weights: WeightFile
    config: DiffusionConfig
    standardisation: Standardisation
    n_parameters: int
    training: TrainingRecord | None = None

    @property
    def latent_size(self) -> int:
        """S of the sampled [latent, z] (0 for a photo-z-only model)."""
        return self.standardisation.latent_dim


@dataclass(frozen=True)
class StudentSampler:
    """One distilled sampler: the diffusion network's architecture and standardisation with
    its own weights, sampling [latent, z] by deterministic DDIM on its own time grid: T, the
    interior log-SNR ``nodes`` (increasing), 0. It makes len(nodes) + 1 network evaluations,
    the key it is stored under in ``StudentSection.samplers``."""

    weights: WeightFile
    nodes: tuple[float, ...]
    training: TrainingRecord | None = None

    @property
    def evaluations(self) -> int:
        return len(self.nodes) + 1


@dataclass(frozen=True)
class ProductionSetting:
    """What ``run`` samples with by default (docs/distillation.md: the cheapest setting that
    passes benchmarks/quality_cost.py's rule): ``sampler`` "student" (the ``evaluations``-evaluation
    student) or a teacher sampler at ``evaluations`` steps, ``n_samples`` samples per object."""

    evaluations: int
    n_samples: int
    sampler: str = "student"


@dataclass(frozen=True)
class StudentSection:
    """Few-step samplers distilled from the diffusion network (``train distill``).

    method: the distillation method (e.g. "progressive"); teacher_sha256: the sha256 of the
    diffusion weights they were distilled from (it must be the current one's: retraining
    the diffusion network drops this section); default: the production setting;
    samplers: network evaluations per sample -> its weights, grid and training record.
    """

    method: str
    teacher_sha256: str
    default: ProductionSetting
    samplers: Mapping[int, StudentSampler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wrong = [n for n, s in self.samplers.items() if s.evaluations != n]
        if wrong:
            raise ValueError(
                f"student samplers {wrong} are stored under another evaluation count than theirs"
            )
        if self.default.sampler == "student" and self.default.evaluations not in self.samplers:
            raise ValueError(
                f"the default student makes {self.default.evaluations} evaluations, but the samplers "
                f"are {sorted(self.samplers)}"
            )
        if self.default.n_samples < 1:
            raise ValueError(f"the default sample count must be >= 1, not {self.default.n_samples}")


@dataclass(frozen=True)
class Calibration:
    """The baseline's recalibration map: raw levels ``level`` at the levels ``u``."""

    u: tuple[float, ...]
    level: tuple[float, ...]


@dataclass(frozen=True)
class BaselineSection:
    """The gradient-boosted tree baseline: its CatBoost file and what it needs besides.

    feature_names: the ``photometric_features`` columns it reads; t_range: the training
    range of t = log(1 + z); calibration: None when not recalibrated; library: the
    CatBoost version that wrote the file.
    """

    weights: WeightFile
    config: BaselineConfig
    feature_names: tuple[str, ...]
    t_range: tuple[float, float]
    calibration: Calibration | None
    library: str
    target: str = "log1p(z)"
    training: TrainingRecord | None = None


@dataclass(frozen=True)
class CoverageSection:
    """The training-set coverage score (docs/coverage.md): its file (reference and calibration
    samples in standardised feature space), settings and the features it compares.

    feature_names: the ``photometric_features`` columns; n_reference, n_calibration: the
    samples' sizes; training: how it was built, with the fraction of held-out training
    objects below the threshold in ``validation``. ppc_floors: band name -> the fractional
    flux floor of the posterior-predictive check, calibrated on validation objects
    (``ppc.calibrate_floors``; empty: ``defaults.PPC_FLUX_FLOOR`` for every band).
    """

    weights: WeightFile
    config: CoverageConfig
    feature_names: tuple[str, ...]
    n_reference: int
    n_calibration: int
    training: TrainingRecord | None = None
    ppc_floors: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TrainingData:
    """What the model was trained on: a description and the command / script that made the
    data, and the training set's own summary (trainset.json: selection, counts, sources)."""

    description: str = ""
    command: str = ""
    script: str = ""
    trainset: Mapping[str, Any] = field(default_factory=dict)

    def statement(self) -> dict[str, str]:
        """description, command and script, where known (what a run records as trained-on)."""
        return {
            k: v
            for k, v in (
                ("command", self.command),
                ("description", self.description),
                ("script", self.script),
            )
            if v
        }


@dataclass(frozen=True)
class Provenance:
    """software_version: of the last writer; simulated: trained on simulated galaxies
    (every user of the model is told, ``models.simulation_notice``); None: not recorded."""

    software_version: str = __version__
    simulated: bool | None = None


@dataclass(frozen=True)
class ModelConfig:
    """config.json of a model directory, typed. A component is None until trained."""

    format_version: int = FORMAT_VERSION
    provenance: Provenance = field(default_factory=Provenance)
    bands: BandSet | None = None
    training_data: TrainingData = field(default_factory=TrainingData)
    autoencoder: AutoencoderSection | None = None
    diffusion: DiffusionSection | None = None
    student: StudentSection | None = None
    baseline: BaselineSection | None = None
    coverage: CoverageSection | None = None

    def __post_init__(self) -> None:
        if self.student is not None and (
            self.diffusion is None or self.student.teacher_sha256 != self.diffusion.weights.sha256
        ):
            raise ValueError(
                "the student section was distilled from other diffusion weights than the model's; "
                "run `train distill` again"
            )

    def weight_files(self) -> list[WeightFile]:
        """Every file the sections record."""
        sections = (self.autoencoder, self.diffusion, self.baseline, self.coverage)
        files = [s.weights for s in sections if s is not None]
        if self.student is not None:
            files += [s.weights for s in self.student.samplers.values()]
        return files

    def trained_on(self) -> dict[str, Any] | str:
        """What the model was trained on, for a run's provenance: the training-data statement,
        else the diffusion training set and its counts, else "unknown"."""
        statement = self.training_data.statement()
        if statement:
            return statement
        if self.diffusion is not None and self.diffusion.training is not None:
            return {"path": self.diffusion.training.data, **self.diffusion.training.counts}
        return "unknown"

    def check_bands(self, bandset: BandSet, where: str | Path) -> None:
        """Refuse to add a component trained on another band set than the model's."""
        if self.bands is not None and self.bands.name != bandset.name:
            raise ValueError(
                f"{where}: its models use band set {self.bands.name!r} but the training set has "
                f"{bandset.name!r}; train on the same photometry or into another model directory"
            )

    def with_training_set(
        self, bands: BandSet, trainset: Mapping[str, Any], simulated: bool | None
    ) -> ModelConfig:
        """This config after a component was trained on a training set with band set ``bands``,
        summary ``trainset`` (trainset.json) and ``simulated`` (None: not said, keep the current)."""
        provenance = self.provenance if simulated is None else Provenance(simulated=simulated)
        data = self.training_data
        return dataclasses.replace(
            self,
            bands=bands,
            training_data=data if data.trainset else dataclasses.replace(data, trainset=dict(trainset)),
            provenance=provenance,
        )


# --- paths and files -----------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """The model bundled with the package (trained on the simulated mock survey)."""
    return Path(str(resources.files("specdiff_catalog") / "data" / "default_model"))


def model_id(model_dir: str | Path) -> str:
    """A sha256 identifying the model: of config.json, which records every file's sha256."""
    return sha256_file(Path(model_dir) / CONFIG)


def _recorded(model_dir: Path, filename: str) -> WeightFile:
    return WeightFile(file=filename, sha256=sha256_file(model_dir / filename))


def write_tensors(model_dir: str | Path, filename: str, tensors: Mapping[str, torch.Tensor]) -> WeightFile:
    """Write ``tensors`` to MODEL/filename (safetensors, atomically); returns it with its sha256."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_atomic(model_dir / filename, lambda tmp: save_file(data, str(tmp)))
    return _recorded(model_dir, filename)


def write_catboost(model_dir: str | Path, filename: str, booster: catboost.CatBoostRegressor) -> WeightFile:
    """Write a fitted CatBoost model to MODEL/filename (its own binary format, atomically)."""
    model_dir = Path(model_dir)
    write_atomic(model_dir / filename, lambda tmp: booster.save_model(str(tmp), format="cbm"))
    return _recorded(model_dir, filename)


def write_baseline(
    model_dir: str | Path, model: BaselineModel, training: TrainingRecord | None = None
) -> BaselineSection:
    """Write a fitted baseline's booster to MODEL/baseline.cbm; returns its config.json section."""
    import catboost

    calibration = model.calibration
    return BaselineSection(
        weights=write_catboost(model_dir, BASELINE_FILE, model.booster),
        config=model.config,
        feature_names=tuple(model.feature_names or ()),
        t_range=model.t_range,
        calibration=None if calibration is None else Calibration(*calibration),
        library=f"catboost {catboost.__version__}",
        training=training,
    )


def verified_path(model_dir: str | Path, weights: WeightFile) -> Path:
    """Path of a recorded file after checking its sha256 against the record."""
    path = Path(model_dir) / weights.file
    if not path.exists():
        raise ModelDirectoryError(f"{model_dir}: {weights.file} is missing")
    actual = sha256_file(path)
    if actual != weights.sha256:
        raise ModelDirectoryError(
            f"{path}: sha256 {actual[:12]}... does not match {weights.sha256[:12]}... recorded in {CONFIG}; "
            "the file was altered or corrupted, refusing to load it"
        )
    return path


def read_tensors(
    model_dir: str | Path, weights: WeightFile, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Tensors of a verified safetensors file (no code is executed while loading)."""
    from safetensors.torch import load_file

    return load_file(str(verified_path(model_dir, weights)), device=str(device))


CATBOOST_SIGNATURE = b"CBM1"  # the first bytes of a model file in CatBoost's own format


def read_catboost(model_dir: str | Path, weights: WeightFile) -> catboost.CatBoostRegressor:
    """The verified CatBoost model (FlatBuffers; nothing unpickled). ModelDirectoryError, one
    line, for a file that is not in CatBoost's format (e.g. a pickle) or that CatBoost refuses."""
    import catboost

    path = verified_path(model_dir, weights)
    with open(path, "rb") as fh:
        head = fh.read(len(CATBOOST_SIGNATURE))
    if head != CATBOOST_SIGNATURE:
        what = "a Python pickle, which is never loaded" if head[:1] == b"\x80" else "no CBM1 signature"
        raise ModelDirectoryError(f"{path}: not a CatBoost model file ({what})")
    booster = catboost.CatBoostRegressor()
    try:
        booster.load_model(str(path), format="cbm")
    except catboost.CatBoostError as err:
        raise ModelDirectoryError(
            f"{path}: CatBoost cannot read it ({str(err).splitlines()[0][:200]})"
        ) from err
    return booster


def read_config(model_dir: str | Path, *, missing_ok: bool = False) -> ModelConfig:
    """The typed config.json of a model directory (version 1 is migrated).

    missing_ok: an empty ModelConfig when there is no config.json yet (a new model
    directory); otherwise ModelDirectoryError, as for invalid JSON or an invalid section.
    """
    path = Path(model_dir) / CONFIG
    if not path.exists():
        if missing_ok:
            return ModelConfig()
        raise ModelDirectoryError(f"{model_dir} is not a model directory (no {CONFIG})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelDirectoryError(f"{path}: not valid JSON: {err}") from err
    return config_from_json(data, str(path))


def config_from_json(data: Any, source: str) -> ModelConfig:
    """A ModelConfig from parsed config.json content of any known format_version."""
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{source}: not a JSON object")
    version = data.get("format_version")
    if version == 1:
        data = _migrate_v1(data)
    elif version != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{source}: format_version {version!r} is not one this version ({__version__}) reads "
            f"(1, {FORMAT_VERSION})"
        )
    try:
        config = _decode(ModelConfig, data, "config")
    except (ConfigError, ValueError, TypeError, KeyError) as err:
        raise ModelDirectoryError(f"{source}: {err}") from err
    return typing.cast(ModelConfig, config)


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """config.json content of ``config`` (JSON types only)."""
    return typing.cast(dict[str, Any], _encode(config))


def write_config(model_dir: str | Path, config: ModelConfig) -> ModelConfig:
    """Write config.json atomically, stamped with this software version; returns what was written.

    Every file a section records must exist with its recorded sha256.
    """
    model_dir = Path(model_dir)
    config = dataclasses.replace(
        config, provenance=dataclasses.replace(config.provenance, software_version=__version__)
    )
    for weights in config.weight_files():
        verified_path(model_dir, weights)
    text = json.dumps(config_to_json(config), indent=2, sort_keys=True)
    write_atomic(model_dir / CONFIG, lambda tmp: tmp.write_text(text + "\n"))
    return config


# --- the JSON codec: dataclasses walked by their type hints ----------------------------------


def _encode(value: Any) -> Any:
    """JSON-ready form: to_dict() where a class has one, dataclass fields, lists for tuples."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; a ValueError naming ``where`` when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where)
    if tp is Any:
        return value
    if isinstance(tp, type) and hasattr(tp, "from_dict"):
        return tp.from_dict(_expect(dict, value, where), source=where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, _expect(dict, value, where), where)
    if origin is tuple:
        items = _expect(list, value, where)
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"{where}: expected {len(kinds)} values, got {len(items)}")
        return tuple(
            _decode(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(kinds, items, strict=True))
        )
    if origin in (Mapping, dict):
        key_type, value_type = args
        return {
            _decode(key_type, k if key_type is str else int(k), where): _decode(value_type, v, f"{where}.{k}")
            for k, v in _expect(dict, value, where).items()
        }
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return _expect(tp, value, where)


def _expect(tp: type, value: Any, where: str) -> Any:
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}"[:200])
    return value


def _decode_dataclass(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    return cls(**{name: _decode(hints[name], value, f"{where}.{name}") for name, value in data.items()})


# --- format_version 1 (software 0.1.0) --------------------------------------------------------


def _migrate_v1(old: dict[str, Any]) -> dict[str, Any]:
    """Version-1 content as version-2 content.

    Version 1 kept the sha256 of every file in a top-level ``files`` map, named each
    section's file under ``file`` or ``weights``, ``simulated`` and ``software_version``
    at the top, the band set again inside ``baseline``, and the training summaries in
    section-specific shapes; version 2 keeps each file's name and sha256 in its section
    (``weights``), one ``bands``, a ``provenance`` section and one TrainingRecord shape.
    """
    files: dict[str, str] = old.get("files", {})

    def weights(section: dict[str, Any], default: str) -> dict[str, str]:
        name = section.get("file") or section.get("weights") or default
        if name not in files:
            raise ModelDirectoryError(f"{name} is not recorded in {CONFIG}")
        return {"file": name, "sha256": files[name]}

    new: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "provenance": {
            "software_version": old.get("software_version", "0.1.0"),
            "simulated": None if old.get("simulated") is None else bool(old["simulated"]),
        },
        "bands": old.get("bands"),
        "training_data": dict(old.get("training_data") or {}),
    }
    if "autoencoder" in old:
        ae = old["autoencoder"]
        data = ae.get("training_data", {})
        if "summary" in data:
            new["training_data"]["trainset"] = data["summary"]
        train = dict(ae.get("training", {}))
        new["autoencoder"] = {
            "weights": weights(ae, AUTOENCODER_FILE),
            "config": ae["architecture"],
            "n_parameters": ae["n_parameters"],
            "observed_grid": {k: ae["observed_grid"][k] for k in ("min", "max", "n")},
            "instrument_pixels": ae["observed_grid"]["instrument_pixels"],
            "rest_grid": {k: ae["rest_grid"][k] for k in ("min", "max", "n")},
            "z_range": ae["z_range"],
            "training": {
                "preset": train.pop("preset", ""),
                "data": data.get("path", ""),
                "seed": train.get("seed", 0),
                "seconds": train.pop("seconds", 0.0),
                "best_step": train.pop("best_epoch", None),
                "steps_run": train.pop("epochs_run", None),
                "settings": train,
                "counts": {k: data[k] for k in ("n_train", "n_val") if k in data},
                "validation": ae.get("validation", {}),
            },
        }
    if "diffusion" in old:
        dm = old["diffusion"]
        train = dict(dm.get("training", {}))
        data = dict(dm.get("training_data", {}))
        path = data.pop("path", "")
        new["diffusion"] = {
            "weights": weights(dm, DIFFUSION_FILE),
            "config": dm["config"],
            "standardisation": dm["standardisation"],
            "n_parameters": dm["n_parameters"],
            "training": {
                "preset": train.pop("preset", ""),
                "data": path,
                "seed": train.get("seed", 0),
                "seconds": train.pop("seconds", 0.0),
                "best_step": train.pop("best_epoch", None),
                "steps_run": train.pop("epochs_run", None),
                "settings": train,
                "counts": data,
                "validation": dm.get("validation", {}),
            },
        }
    if "baseline" in old:
        bl = old["baseline"]
        if new["bands"] is None:
            new["bands"] = bl.get("bands")
        train = dict(bl.get("training", {}))
        calibration = bl.get("calibration")
        new["baseline"] = {
            "weights": weights(bl, BASELINE_FILE),
            "config": bl["config"],
            "feature_names": bl["feature_names"],
            "t_range": bl["t_range"],
            "calibration": None
            if calibration is None
            else {"u": calibration["u"], "level": calibration["level"]},
            "library": bl.get("library", ""),
            "target": bl.get("target", "log1p(z)"),
            "training": {
                "preset": train.pop("preset", ""),
                "data": train.pop("data", ""),
                "seed": train.pop("seed", 0),
                "seconds": train.pop("train_seconds", 0.0),
                "best_step": train.pop("best_iteration", bl.get("best_iteration")),
                "validation": train.pop("validation", {}),
                "counts": {k: train.pop(k) for k in list(train) if k.startswith("n_")},
                "settings": train,
            },
        }
    return new
