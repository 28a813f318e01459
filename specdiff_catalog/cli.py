"""The ``specdiff-catalog`` command: parse arguments, call one library function per command.

No numerics live here. Errors a user can fix (missing or corrupt files, bad
configuration) end with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from specdiff_catalog import __version__, defaults
from specdiff_catalog.extras import MissingExtraError, require

if TYPE_CHECKING:  # the CLI imports torch only in the commands that need it
    from specdiff_catalog.training.loop import FitResult


def _add_mock(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mock", help="write a synthetic survey in the real DESI and HATS formats")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--n-spec", type=int, default=2000, help="galaxies with DESI-format spectra (default 2000)"
    )
    p.add_argument(
        "--n-phot", type=int, default=20000, help="galaxies in the HATS photometric catalog (default 20000)"
    )
    p.add_argument(
        "--n-deep",
        type=int,
        default=0,
        help="galaxies with spectra from a deep calibration field: catalog galaxies other than "
        "the DESI targets with spectra, TARGET_CLASS DEEP (default 0)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed 0..1023; seeds never share object ids (default 0)"
    )
    p.add_argument(
        "--z-max", type=float, default=1.6, help="largest redshift of the galaxy population (default 1.6)"
    )
    p.add_argument("--order", type=int, default=4, help="HEALPix order of the catalog partitions (default 4)")
    p.add_argument(
        "--n-rest", type=int, default=500, help="noiseless rest-frame spectra kept as truth (default 500)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(handler=_mock)


def _mock(args: argparse.Namespace) -> None:
    require("mock", "specdiff-catalog mock")
    from dataclasses import replace

    from specdiff_catalog.mock import MockConfig, make_mock_survey

    defaults = MockConfig()
    config = MockConfig(
        n_spec=args.n_spec,
        n_phot=args.n_phot,
        n_deep=args.n_deep,
        seed=args.seed,
        population=replace(defaults.population, z_max=args.z_max),
        order=args.order,
        n_rest_spectra=args.n_rest,
    )
    summary = make_mock_survey(args.out, config, overwrite=args.overwrite)
    print(f"mock survey in {args.out}: {summary['counts']} ({summary['seconds']} s)")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn DESI coadd + redrock files into a training set")
    p.add_argument("--desi", required=True, type=Path, help="directory searched recursively for coadd-*.fits")
    p.add_argument("--out", required=True, type=Path, help="training-set directory to write")
    p.add_argument(
        "--bands",
        default=defaults.BANDSET,
        help=f"band preset name or TOML/JSON file (default {defaults.BANDSET}); "
        "the training set records the band set itself",
    )
    z_min, z_max = defaults.TRAINING_Z_RANGE
    p.add_argument("--z-min", type=float, default=z_min, help=f"lowest redshift kept (default {z_min:g})")
    p.add_argument(
        "--z-max",
        type=float,
        default=z_max,
        help="redshifts kept are below this (default: no upper cut, every good GALAXY redshift)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing training set")
    p.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from specdiff_catalog.selection import SpectroSelection
    from specdiff_catalog.training.prepare import prepare_training_set

    report = prepare_training_set(
        args.desi,
        args.out,
        bands=args.bands,
        selection=SpectroSelection(z_min=args.z_min, z_max=args.z_max),
        overwrite=args.overwrite,
    )
    print(report.summary())
    for warning in report.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return 1 if report.failed_files else 0


def _training_options(p: argparse.ArgumentParser, preset: str) -> None:
    """Options every `train JOB` shares."""
    p.add_argument("--data", required=True, type=Path, help="training set directory (written by `prepare`)")
    p.add_argument(
        "--model",
        "--out",
        dest="out",
        metavar="MODEL",
        required=True,
        type=Path,
        help="model directory to write into (created if absent)",
    )
    p.add_argument("--preset", default=preset, help=f"preset name or TOML/JSON file (default {preset})")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default: the preset's, normally auto)")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in MODEL/training/"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _add_train_autoencoder(jobs: argparse._SubParsersAction) -> None:
    p = jobs.add_parser(
        "autoencoder", help="train the SPENDER spectrum autoencoder on a training set's spectra"
    )
    _training_options(p, defaults.PRESET)
    p.add_argument(
        "--consistency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="redshift-augmentation consistency loss (default: the preset's)",
    )
    p.set_defaults(handler=_train_autoencoder)


def _train_autoencoder(args: argparse.Namespace) -> int:
    from specdiff_catalog.training.autoencoder import train_autoencoder

    result = train_autoencoder(
        args.data,
        args.out,
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        consistency=args.consistency,
        resume=args.resume,
        progress=args.progress,
    )
    return _training_outcome("autoencoder: best validation chi2/pixel", result, args.out)


def _add_train_diffusion(jobs: argparse._SubParsersAction) -> None:
    p = jobs.add_parser("diffusion", help="train the conditional diffusion model p(latent, z | photometry)")
    _training_options(p, defaults.PRESET)
    p.add_argument(
        "--no-spectra",
        action="store_true",
        help="photo-z-only mode: learn p(z | photometry); DATA may be a Parquet file of photometry + Z",
    )
    p.add_argument(
        "--flux-noise",
        type=float,
        default=0.0,
        metavar="SCALE",
        help="add SCALE x the quoted flux errors of extra noise to training fluxes (default 0: off)",
    )
    _bands_option(p)
    p.set_defaults(handler=_train_diffusion)


def _bands_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bands",
        help="band preset name or TOML/JSON file of DATA's photometry columns (default: what the training "
        "set records; ls-grzw1w2 for a Parquet file), e.g. lsst for a Parquet file of LSST ugrizy fluxes",
    )


def _train_diffusion(args: argparse.Namespace) -> int:
    from specdiff_catalog.training.diffusion import train_diffusion

    result = train_diffusion(
        args.data,
        args.out,
        preset=args.preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        no_spectra=args.no_spectra,
        flux_noise=args.flux_noise,
        bands=args.bands,
        resume=args.resume,
        progress=args.progress,
    )
    return _training_outcome("diffusion: best validation loss", result, args.out)


def _training_outcome(what: str, result: FitResult, out: Path) -> int:
    """Print a training job's best validation metric and where it went; exit 1 if it stopped early."""
    print(
        f"{what} {result.best_metric:.4g} at epoch {result.best_epoch + 1}; "
        f"{'written to ' + str(out) if result.finished else 'stopped early, resume with --resume'}"
    )
    return 0 if result.finished else 1


def _add_train_baseline(jobs: argparse._SubParsersAction) -> None:
    p = jobs.add_parser(
        "baseline", help="train the CatBoost tree baseline (photo-z quantiles) on the same photometry"
    )
    p.add_argument(
        "--data", required=True, type=Path, help="training set directory or photometry + Z Parquet file"
    )
    p.add_argument(
        "--model",
        "--out",
        dest="out",
        metavar="MODEL",
        required=True,
        type=Path,
        help="model directory to write into (created if absent)",
    )
    p.add_argument(
        "--preset", default=defaults.PRESET, help=f"preset name or TOML/JSON file (default {defaults.PRESET})"
    )
    p.add_argument("--seed", type=int, default=defaults.SEED, help=f"random seed (default {defaults.SEED})")
    p.add_argument("--threads", type=int, default=-1, help="CPU threads (default: all)")
    _bands_option(p)
    p.set_defaults(handler=_train_baseline)


def _train_baseline(args: argparse.Namespace) -> None:
    from specdiff_catalog.training.baseline import train_baseline

    outcome = train_baseline(
        args.data, args.out, preset=args.preset, seed=args.seed, threads=args.threads, bands=args.bands
    )
    counts, point = outcome.record.counts, outcome.point
    print(
        f"baseline: {counts['n_train']} train / {counts['n_val']} val objects "
        f"({counts['n_skipped_no_photometry']} without photometry skipped), "
        f"{outcome.record.best_step} trees, "
        f"{outcome.record.seconds} s; validation sigma_NMAD {point.sigma_nmad:.4f}, "
        f"eta_0.15 {point.eta_015:.4f}, CRPS {outcome.pdf.crps:.4f}; written to {args.out}"
    )


def _add_train_coverage(jobs: argparse._SubParsersAction) -> None:
    p = jobs.add_parser(
        "coverage",
        help="add the training-set coverage score to a model (train diffusion writes one itself)",
    )
    p.add_argument("--model", "--out", dest="out", metavar="MODEL", required=True, type=Path)
    p.add_argument(
        "--data", type=Path, help="training set (default: the one the model's diffusion section records)"
    )
    p.add_argument(
        "--k", type=int, default=defaults.COVERAGE_K, help=f"neighbour rank (default {defaults.COVERAGE_K})"
    )
    p.add_argument(
        "--n-reference",
        type=int,
        default=defaults.COVERAGE_REFERENCE,
        help=f"training objects kept with the model (default {defaults.COVERAGE_REFERENCE})",
    )
    p.add_argument(
        "--n-calibration",
        type=int,
        default=defaults.COVERAGE_CALIBRATION,
        help=f"validation objects that calibrate the score (default {defaults.COVERAGE_CALIBRATION})",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=defaults.COVERAGE_THRESHOLD,
        help=f"LOW_COVERAGE below this score (default {defaults.COVERAGE_THRESHOLD}: "
        "~1%% of training-like objects)",
    )
    p.add_argument(
        "--seed", type=int, default=defaults.SEED, help=f"subsample seed (default {defaults.SEED})"
    )
    p.set_defaults(handler=_train_coverage)


def _train_coverage(args: argparse.Namespace) -> None:
    from specdiff_catalog.models.coverage import CoverageConfig
    from specdiff_catalog.training.coverage import train_coverage

    config = CoverageConfig(
        k=args.k,
        n_reference=args.n_reference,
        n_calibration=args.n_calibration,
        threshold=args.threshold,
        seed=args.seed,
    )
    section = train_coverage(args.out, args.data, config)
    record = section.training
    held = record.validation.get("held_out_low_fraction") if record else None
    print(
        f"coverage: {section.n_reference} reference and {section.n_calibration} calibration objects "
        f"from {record.data if record else args.data}; "
        + (
            f"{100 * held:.2f}% of held-out training objects below {config.threshold}; "
            if held is not None
            else ""
        )
        + (
            "photometry-check floors "
            + ", ".join(f"{band} {100 * v:.1f}%" for band, v in section.ppc_floors.items())
            + "; "
            if section.ppc_floors
            else ""
        )
        + f"written to {args.out}"
    )


def _add_train_distill(jobs: argparse._SubParsersAction) -> None:
    p = jobs.add_parser(
        "distill",
        help="distil the model's diffusion teacher into few-step students (1, 2, 4 network evaluations)",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory with a trained diffusion model")
    p.add_argument(
        "--data",
        type=Path,
        help="training set (directory or photometry Parquet) whose photometry conditions the teacher "
        "(default: the diffusion training set recorded in the model's config.json)",
    )
    p.add_argument(
        "--preset", default="default", help="distill preset name or TOML/JSON file (default default)"
    )
    p.add_argument(
        "--evaluations",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        help="comma-separated students to train, by network evaluations (default: the preset's, 4,2,1)",
    )
    p.add_argument("--epochs", type=int, help="epochs per student (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default: the preset's, normally auto)")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoints in MODEL/training/distill/"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=_train_distill)


def _train_distill(args: argparse.Namespace) -> int:
    from specdiff_catalog.training.distill import distill

    result = distill(
        args.model,
        data=args.data,
        preset=args.preset,
        evaluations=args.evaluations,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        progress=args.progress,
    )
    for n, metrics in sorted((k, v) for k, v in result.validation.items() if k != "teacher"):
        print(
            f"student {n} evaluation(s): validation CRPS {metrics['pdf']['crps']:.4f}, sigma_NMAD "
            f"{metrics['point']['sigma_nmad']:.4f}, PIT KS {metrics['pdf']['pit_ks']:.4f}"
        )
    if "teacher" in result.validation:
        teacher, steps = result.validation["teacher"], defaults.SAMPLER_STEPS[defaults.TEACHER_SAMPLER]
        print(
            f"teacher ({defaults.TEACHER_SAMPLER}, {steps} steps): validation CRPS "
            f"{teacher['pdf']['crps']:.4f}, sigma_NMAD {teacher['point']['sigma_nmad']:.4f}, "
            f"PIT KS {teacher['pdf']['pit_ks']:.4f}"
        )
    print(f"students written to {args.model}" if result.finished else "stopped early, resume with --resume")
    return 0 if result.finished else 1


TRAIN_JOBS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train_autoencoder,
    _add_train_diffusion,
    _add_train_baseline,
    _add_train_coverage,
    _add_train_distill,
]


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model component (autoencoder, ...) into a model directory")
    jobs = p.add_subparsers(dest="job", metavar="JOB", required=True)
    for add in TRAIN_JOBS:
        add(jobs)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="photo-z PDFs and spectral latents for every object of a catalog, on Dask")
    p.add_argument(
        "--input",
        metavar="CATALOG",
        help="HATS catalog or collection, directory of Parquet files or one Parquet file: a path or "
        "an fsspec URL (file://, s3://, gs://, https://, ...) (default: the bundled demo catalog)",
    )
    p.add_argument(
        "--storage-options",
        type=_json_object,
        metavar="JSON",
        help="options of the input URL's filesystem, a JSON object, e.g. '{\"anon\": true}' for a public "
        "S3 bucket (passed to fsspec; not recorded in the store)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output Zarr store: a path or an fsspec URL such as s3://bucket/pz.zarr (re-running resumes it)",
    )
    p.add_argument(
        "--out-storage-options",
        type=_json_object,
        metavar="JSON",
        help="options of the --out URL's filesystem, e.g. '{\"anon\": false}' for s3://",
    )
    p.add_argument(
        "--model", type=Path, help="model directory (default: the bundled model, trained on simulations)"
    )
    g = p.add_argument_group("what to compute")
    g.add_argument(
        "--n-samples",
        type=int,
        help="diffusion samples per object (default: the model's production count when it has a "
        f"distilled student, else {defaults.N_SAMPLES})",
    )
    g.add_argument(
        "--save-samples", type=int, default=0, metavar="K", help="store K raw z samples per object"
    )
    g.add_argument(
        "--quantiles",
        type=_floats,
        help="comma-separated PDF quantile levels inside (0, 1) (default "
        + ",".join(f"{q:g}" for q in defaults.QUANTILES)
        + ")",
    )
    g.add_argument(
        "--sampler",
        choices=defaults.SAMPLERS,
        default=defaults.SAMPLER,
        help=f"default {defaults.SAMPLER}: the model's production student when it has distilled students "
        f"(train distill), else {defaults.TEACHER_SAMPLER}",
    )
    steps = ", ".join(f"{n or 'all'} for {name}" for name, n in defaults.SAMPLER_STEPS.items())
    g.add_argument(
        "--steps",
        type=int,
        help=f"sampler steps (default: {steps}), or for student the network evaluations of the one to "
        "use (default: the model's production student); with auto, a count no student has runs the teacher "
        "at that many steps",
    )
    g.add_argument(
        "--precision",
        choices=defaults.PRECISIONS,
        default=defaults.PRECISION,
        help=f"network autocast on CUDA workers (default {defaults.PRECISION}; the CPU always runs fp32)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        help="noise seed; an object's noise is keyed by (seed, object id)",
    )
    g.add_argument(
        "--id-column", help="object id column (default OBJECT_ID, else RELEASE/BRICKID/OBJID packed)"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=defaults.BATCH_SIZE,
        help=f"objects per sampler call on a worker (default {defaults.BATCH_SIZE})",
    )
    g = p.add_argument_group("execution")
    g.add_argument(
        "--cluster",
        choices=("auto", "local", "cuda", "slurm"),
        default="auto",
        help="auto: one worker per GPU when there are GPUs and dask-cuda, else local processes",
    )
    g.add_argument("--scheduler-address", help="connect to a running Dask scheduler (tcp://host:port)")
    g.add_argument("--scheduler-file", type=Path, help="connect through a scheduler file (the HPC pattern)")
    g.add_argument("--n-workers", type=int, help="local workers (default: one per core / GPU)")
    g.add_argument("--threads-per-worker", type=int, help="threads per local worker (default 1)")
    g.add_argument(
        "--memory-limit",
        default="auto",
        help="memory per local worker, e.g. 4GiB (default auto); checked against model and batch up front",
    )
    g.add_argument(
        "--dashboard-address", default=":8787", help="dashboard address (default :8787; :0 any port)"
    )
    g.add_argument(
        "--max-in-flight",
        type=int,
        help="partition tasks submitted ahead of the workers (default: 4 per worker thread connected now, "
        "at least 256; the scheduler gives each worker about one per thread)",
    )
    g.add_argument("--retries", type=int, default=2, help="retries of a failed partition task (default 2)")
    g.add_argument("--shard-rows", type=int, help="rows per Zarr shard (default from the partition sizes)")
    g.add_argument("--overwrite", action="store_true", help="start the store over instead of resuming")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group(
        "SLURM through dask-jobqueue (--cluster slurm; options not given come from jobqueue.yaml)"
    )
    g.add_argument("--slurm-queue", help="partition/queue")
    g.add_argument("--slurm-account", help="account to charge")
    g.add_argument("--slurm-qos", help="quality of service (#SBATCH --qos)")
    g.add_argument("--slurm-constraint", help="node features (#SBATCH --constraint), e.g. gpu")
    g.add_argument("--slurm-walltime", help="per job, e.g. 04:00:00")
    g.add_argument("--slurm-jobs", type=int, default=1, help="worker jobs to submit (default 1)")
    g.add_argument("--slurm-cores", type=int, help="CPU cores per job")
    g.add_argument("--slurm-memory", help="memory per job, e.g. 32GiB")
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job: 0 (CPU workers) or 1 (default 0)")
    g.add_argument("--slurm-local-directory", help="node-local scratch for worker spill files")
    p.set_defaults(handler=_run)


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from err


def _run(args: argparse.Namespace) -> int:
    from specdiff_catalog.pipeline.cluster import ClusterConfig, SlurmOptions
    from specdiff_catalog.pipeline.run import RunOptions, run_catalog

    options = RunOptions(
        n_samples=args.n_samples,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        precision=args.precision,
        quantiles=args.quantiles or defaults.QUANTILES,
        save_samples=args.save_samples,
        batch_size=args.batch_size,
        id_column=args.id_column,
    )
    slurm = SlurmOptions(
        queue=args.slurm_queue,
        account=args.slurm_account,
        qos=args.slurm_qos,
        constraint=args.slurm_constraint,
        walltime=args.slurm_walltime,
        jobs=args.slurm_jobs,
        cores=args.slurm_cores,
        memory=args.slurm_memory,
        gpus_per_job=args.slurm_gpus,
        local_directory=args.slurm_local_directory,
    )
    cluster = ClusterConfig(
        kind=args.cluster,
        scheduler_address=args.scheduler_address,
        scheduler_file=args.scheduler_file,
        n_workers=args.n_workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
        dashboard_address=args.dashboard_address,
        slurm=slurm,
    )
    report = run_catalog(
        args.input,
        args.out,
        args.model,
        options,
        cluster,
        overwrite=args.overwrite,
        max_in_flight=args.max_in_flight,
        retries=args.retries,
        shard_rows=args.shard_rows,
        progress=not args.no_progress,
        storage_options=args.storage_options,
        out_storage_options=args.out_storage_options,
    )
    print(report.summary())
    return 1 if report.failed or report.stopped else 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="photo-z metrics of a run's store against true redshifts, diffusion vs baseline"
    )
    p.add_argument("--pz", required=True, metavar="STORE", help="output store written by `run` (path or URL)")
    p.add_argument(
        "--truth", required=True, type=Path, help="Parquet file with OBJECT_ID and Z (true redshift)"
    )
    p.add_argument(
        "--model",
        type=Path,
        help="model directory whose baseline to compare with (default: the store's model)",
    )
    p.add_argument(
        "--json", type=Path, metavar="OUT", help="write every metric (all objects and per bin) as JSON"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        help=f"seed of the baseline's samples and PIT ties (default {defaults.SEED})",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="evaluate the done partitions of a store that has failed or pending ones (says how many "
        "objects are left out)",
    )
    g = p.add_argument_group("validation report")
    g.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.html (self-contained), PNGs and metrics.json"
    )
    g.add_argument(
        "--spectra",
        type=Path,
        metavar="DESI_DIR",
        help="DESI coadd + redrock files: add spectra predicted from their photometry vs observed",
    )
    g.add_argument(
        "--spectra-truth",
        type=Path,
        metavar="DIR",
        help="mock truth directory for the spectra (default: the --truth file's directory if it has one)",
    )
    g.add_argument("--max-spectra", type=int, help="compare at most this many spectra (default: all)")
    p.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    from specdiff_catalog.report.evaluate import evaluate_store
    from specdiff_catalog.report.html import evaluation_report

    if args.spectra and not args.report:
        raise ValueError("--spectra adds a section to the report: give --report DIR too")
    if args.report:
        result, report = evaluation_report(
            args.pz,
            args.truth,
            args.report,
            model=args.model,
            desi=args.spectra,
            spectra_truth=args.spectra_truth,
            max_spectra=args.max_spectra,
            seed=args.seed,
            partial=args.partial,
        )
        print(f"report written to {report.html} ({len(report.figures)} figures, metrics in {report.metrics})")
    else:
        result = evaluate_store(args.pz, args.truth, args.model, seed=args.seed, partial=args.partial)
    print(result.format())
    if args.json:
        result.write_json(args.json)
        print(f"metrics written to {args.json}")


def _add_spectra(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spectra", help="decode stored latents of selected objects into spectra, with Dn4000")
    p.add_argument("--pz", required=True, help="output Zarr store written by `run` (path or URL)")
    p.add_argument(
        "--select",
        required=True,
        help="ids=ID,ID,... | ids=@FILE (one id per line) | rows=START:STOP | random=N",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.SEED,
        help=f"seed of a random selection (default {defaults.SEED})",
    )
    p.add_argument("--out", required=True, type=Path, help="file to write: .fits or .zarr")
    p.add_argument("--model", type=Path, help="model directory (default: the store's; its sha256 must match)")
    p.add_argument(
        "--observed",
        nargs="?",
        const="desi",
        choices=("desi", "model"),
        help="also redshift the spectra onto an observed grid (default grid: desi)",
    )
    p.add_argument(
        "--redshift",
        choices=("median", "mode"),
        default="median",
        help="the z of the observed-frame spectra (default median)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(handler=_spectra)


def _spectra(args: argparse.Namespace) -> None:
    from specdiff_catalog.io.spectra_file import write_spectra
    from specdiff_catalog.reconstruct import ObjectSelection, reconstruct_spectra

    spectra = reconstruct_spectra(
        args.pz,
        ObjectSelection.parse(args.select, args.seed),
        model_dir=args.model,
        redshift=args.redshift,
        observed=args.observed,
    )
    write_spectra(spectra, args.out, overwrite=args.overwrite)
    print(
        f"{args.out}: {len(spectra)} objects ({int(spectra.has_latent.sum())} with a latent), "
        f"rest frame {spectra.wave_rest[0]:.0f}-{spectra.wave_rest[-1]:.0f} A"
        + (f", observed frame at z_{spectra.redshift}" if spectra.wave_obs is not None else "")
    )


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info", help="print an output store's provenance, counts, flag counts and quantile levels"
    )
    p.add_argument("store", help="output Zarr store written by `run` (path or URL)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_info)


def _info(args: argparse.Namespace) -> None:
    import json

    from specdiff_catalog.report.info import format_info, store_info

    info = store_info(args.store)
    print(json.dumps(info, indent=1) if args.json else format_info(info))


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the PDFs in another format (qp for RAIL)")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    q = formats.add_parser("qp", help="a qp hist ensemble (.hdf5, .fits or .pq) readable by qp.read")
    q.add_argument("--pz", required=True, help="output Zarr store written by `run` (path or URL)")
    q.add_argument(
        "--out", required=True, type=Path, help="file to write (.hdf5: RAIL's format, written in blocks)"
    )
    q.add_argument(
        "--dz",
        type=float,
        default=defaults.QP_DZ,
        help=f"histogram bin width in redshift (default {defaults.QP_DZ:g}); the bins span every PDF",
    )
    q.add_argument("--overwrite", action="store_true", help="replace an existing file")
    q.add_argument(
        "--partial",
        action="store_true",
        help="export the done partitions of a store that has failed or pending ones (says how many "
        "objects are left out)",
    )
    q.set_defaults(handler=_export_qp)


def _export_qp(args: argparse.Namespace) -> None:
    from specdiff_catalog.report.qp_export import export_qp

    print(export_qp(args.pz, args.out, dz=args.dz, overwrite=args.overwrite, partial=args.partial).summary())


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render docs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="specdiff-catalog",
        description="Photo-z PDFs and rest-frame spectra for HEALPix-partitioned catalogs "
        "with a conditional latent diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_run,
    _add_mock,
    _add_prepare,
    _add_train,
    _add_evaluate,
    _add_spectra,
    _add_info,
    _add_export,
]


def _one_line_warnings(command: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints this package's warnings as one line naming the
    command (``specdiff-catalog run: warning: ...``) and hands others to ``previous``."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.startswith("specdiff_catalog"):
            print(f"specdiff-catalog {command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warnings(args.command)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"specdiff-catalog {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, MissingExtraError) as err:
        if args.traceback:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"specdiff-catalog {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous
