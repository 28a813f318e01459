"""One home for defaults: the CLI, the pipeline and the library functions read defaults.py."""

import dataclasses
import inspect

from specdiff_catalog import api, defaults
from specdiff_catalog.cli import build_parser
from specdiff_catalog.inference import predict, predict_columns
from specdiff_catalog.models import choose_sampling
from specdiff_catalog.models.sampling import sample
from specdiff_catalog.models.store import default_model_dir, read_config
from specdiff_catalog.pipeline.run import RunOptions
from specdiff_catalog.selection import SpectroSelection
from specdiff_catalog.training.prepare import prepare_training_set


def test_cli_pipeline_and_library_share_the_defaults():
    run = build_parser().parse_args(["run", "--out", "o.zarr"])
    options = RunOptions()
    # samples per object: None everywhere, i.e. the model's production count with a distilled
    # student, else defaults.N_SAMPLES (one rule, models.choose_sampling)
    assert (run.n_samples, options.n_samples, _default(predict, "n_samples")) == (None,) * 3
    assert _default(predict_columns, "n_samples") is _default(api.predict, "n_samples") is None
    no_student = dataclasses.replace(read_config(default_model_dir()), student=None)
    assert choose_sampling(no_student, run.sampler, run.steps, run.n_samples).n_samples == defaults.N_SAMPLES
    assert options.resolved(no_student).n_samples == defaults.N_SAMPLES
    assert run.precision == options.precision == _default(sample, "precision") == defaults.PRECISION
    assert (run.batch_size, options.batch_size, _default(predict_columns, "batch_size")) == (
        defaults.BATCH_SIZE,
    ) * 3
    assert (run.sampler, options.sampler, _default(sample, "sampler")) == (defaults.SAMPLER,) * 3
    assert _default(predict, "sampler") == _default(api.predict, "sampler") == defaults.SAMPLER
    assert (run.seed, options.seed) == (defaults.SEED, defaults.SEED) and run.quantiles is None
    assert options.quantiles == _default(predict, "quantiles") == defaults.QUANTILES
    prepare = build_parser().parse_args(["prepare", "--desi", "d", "--out", "t"])
    assert prepare.bands == _default(prepare_training_set, "bands") == defaults.BANDSET
    selection = SpectroSelection()
    assert (prepare.z_min, prepare.z_max) == (selection.z_min, selection.z_max) == defaults.TRAINING_Z_RANGE
    for job in ("autoencoder", "diffusion"):
        assert (
            build_parser().parse_args(["train", job, "--data", "d", "--model", "m"]).preset == defaults.PRESET
        )


def _default(function, name):
    return inspect.signature(function).parameters[name].default
