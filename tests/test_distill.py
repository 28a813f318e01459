"""Distilled students: the target algebra, the teacher's paths, bitwise batch independence,
the model directory, and a student of a trained tiny teacher against that teacher."""

import dataclasses
import itertools
import json
import math
import shutil
from dataclasses import astuple

import numpy as np
import pytest
import torch
from test_sampling import tiny_model

from specdiff_catalog import defaults
from specdiff_catalog.cli import main
from specdiff_catalog.inference import predict
from specdiff_catalog.io.catalog import open_catalog, read_partition
from specdiff_catalog.metrics import crps
from specdiff_catalog.models import choose_sampling, load_model
from specdiff_catalog.models.diffusion import CosineSchedule
from specdiff_catalog.models.distill import (
    DEFAULT_NODES,
    StudentModel,
    flop_per_galaxy,
    student_times,
    teacher_paths,
    teacher_times,
    x0_target,
)
from specdiff_catalog.models.sampling import CounterNoise, ddim, dpmpp_2m, sample
from specdiff_catalog.models.store import (
    CONFIG,
    ModelDirectoryError,
    ProductionSetting,
    StudentSampler,
    StudentSection,
    WeightFile,
    default_model_dir,
    read_config,
    verified_path,
)
from specdiff_catalog.pipeline.run import RunOptions
from specdiff_catalog.training.distill import set_production_default


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_student_grids_sit_on_the_teachers_solve_grid():
    schedule = CosineSchedule()
    for n, nodes in DEFAULT_NODES.items():
        times = student_times(schedule, nodes)
        assert len(times) == n + 1 and times[0] == 1000 and times[-1] == 0
        assert all(a > b for a, b in itertools.pairwise(times))
        np.testing.assert_allclose([schedule.log_snr(t) for t in times[1:-1]], nodes, atol=1e-9)
    solve = teacher_times(schedule, [-1.0, 1.0, 3.0])
    assert len(solve) == 31 and set(student_times(schedule, [-1.0, 1.0, 3.0])) <= set(solve)
    with pytest.raises(ValueError, match="not on the teacher's grid"):
        teacher_times(schedule, [0.1])
    with pytest.raises(ValueError, match="at most 4"):
        student_times(schedule, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="increase"):
        student_times(schedule, [1.0, 0.0])


def test_a_ddim_step_with_the_x0_target_lands_on_the_teachers_state():
    schedule = CosineSchedule()
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(6, 5, generator=gen, dtype=torch.float64),
        torch.randn(6, 5, generator=gen, dtype=torch.float64),
    )
    t = torch.tensor([1000.0, 900, 700, 500, 300, 120], dtype=torch.float64)
    s = torch.tensor([900.0, 700, 500, 300, 120, 0.0], dtype=torch.float64)
    x0 = x0_target(schedule, x, y, t, s)
    for i in range(6):  # the sampler's own DDIM update (eta = 0) from (x, t) with this x0
        model = _FixedX0(x0[i : i + 1, None])
        got = ddim(model, None, lambda step, i=i: x[i : i + 1, None], [float(t[i]), float(s[i])])
        torch.testing.assert_close(got[0, 0], y[i], rtol=1e-9, atol=1e-9)
    assert torch.equal(x0[-1], y[-1])  # the last step: the target is the teacher's x0


class _FixedX0:
    schedule = CosineSchedule()

    def __init__(self, x0):
        self.x0 = x0

    def denoise(self, x_t, t, cond):
        return self.x0


def test_teacher_paths_end_where_the_sampler_ends():
    model = tiny_model()
    rng = np.random.default_rng(0)
    features, missing = rng.normal(0, 1, (5, 14)).astype(np.float32), rng.random((5, 5)) < 0.2
    times = teacher_times(model.schedule, [1.0])
    with torch.inference_mode():
        cond = model.embed_condition(features, missing)[:, None, :]
        noise = CounterNoise(3, torch.arange(5), 4, model.data_dim)
        final = dpmpp_2m(model, cond, noise, times)
        keep = [times[0], student_times(model.schedule, [1.0])[1], 0.0]
        paths = teacher_paths(model, cond, noise(0), times, keep)
    assert paths.shape == (5, 3, 4, model.data_dim)  # (G, kept, K, D) for a (G, K, D) start
    assert torch.equal(paths[:, 0], noise(0)) and torch.equal(paths[:, -1], final)


@pytest.mark.parametrize("nodes", [(), (1.0,), (-1.0, 1.0, 3.0)])
def test_a_students_samples_do_not_depend_on_its_batch(nodes):
    student = StudentModel(tiny_model(), nodes)
    assert not student.training  # it follows the wrapped model (in eval mode)
    rng = np.random.default_rng(1)
    n, k = 19, 16
    features = rng.normal(0, 1, (n, 14)).astype(np.float32)
    missing = rng.random((n, 5)) < 0.2
    ids = rng.integers(0, 2**50, n)
    kw = {"n_samples": k, "seed": 5, "sampler": "student"}
    ref = sample(student, features, missing, ids, batch_size=n * k, **kw)
    assert ref.shape == (n, k, 5) and torch.isfinite(ref).all()
    for batch_size in (1, 3 * k, 7 * k):
        assert torch.equal(sample(student, features, missing, ids, batch_size=batch_size, **kw), ref)
    order = rng.permutation(n)
    assert torch.equal(sample(student, features[order], missing[order], ids[order], **kw), ref[order])
    assert torch.equal(sample(student, features[4:5], missing[4:5], ids[4:5], **kw)[0], ref[4])
    assert not torch.any(sample(student, features, missing, ids + 1, **kw) == ref)
    with pytest.raises(ValueError, match=f"makes {len(nodes) + 1} evaluations, not 9"):
        sample(student, features, missing, ids, steps=9, **kw)
    with pytest.raises(ValueError, match="needs a distilled student"):
        sample(tiny_model(), features, missing, ids, **kw)


def test_flop_per_galaxy_counts_the_matrix_products():
    model = tiny_model()  # H = 64, 2 blocks, ratio 2, D = 5, C = 19, 2 condition layers
    h, d = 64, 5
    row = 2 * (d * h + 2 * 2 * h * 2 * h + h * d)
    galaxy_step = 2 * (2 * h * 3 * h + h * 2 * h)
    once = 2 * (19 * h + h * h)
    assert flop_per_galaxy(model, 4, 100) == 4 * (100 * row + galaxy_step) + once


def test_choose_sampling_follows_the_student_section():
    config = dataclasses.replace(read_config(default_model_dir()), student=None)
    assert choose_sampling(config) == choose_sampling(config, "auto", None, None)
    assert (choose_sampling(config).sampler, choose_sampling(config).n_samples) == ("dpmpp2m", 100)
    with pytest.raises(ValueError, match="no distilled student"):
        choose_sampling(config, "student")
    weights = WeightFile("student-1.safetensors", "0" * 64)
    student = StudentSection(
        method="progressive",
        teacher_sha256=config.diffusion.weights.sha256,
        default=ProductionSetting(evaluations=2, n_samples=64),
        samplers={1: StudentSampler(weights, ()), 2: StudentSampler(weights, (1.0,))},
    )
    config = dataclasses.replace(config, student=student)
    assert astuple(choose_sampling(config)) == ("student", 2, 64)
    assert astuple(choose_sampling(config, "auto", 1, 32)) == ("student", 1, 32)
    assert astuple(choose_sampling(config, "student", 1)) == ("student", 1, 64)
    assert astuple(choose_sampling(config, "dpmpp2m")) == ("dpmpp2m", None, defaults.N_SAMPLES)
    # a step count no student has: the teacher at that many steps, with the teacher's samples
    assert astuple(choose_sampling(config, "auto", 5)) == ("dpmpp2m", 5, defaults.N_SAMPLES)
    with pytest.raises(ValueError, match=r"no 4-evaluation student; it has \[1, 2\]"):
        choose_sampling(config, "student", 4)
    # the production setting may be the teacher at fewer steps (no student passed the rule)
    teacher = dataclasses.replace(student, default=ProductionSetting(8, 100, sampler="dpmpp2m"))
    config = dataclasses.replace(config, student=teacher)
    assert astuple(choose_sampling(config)) == ("dpmpp2m", 8, 100)
    assert astuple(choose_sampling(config, "auto", 12)) == ("dpmpp2m", 12, 100)
    assert astuple(choose_sampling(config, "student")) == ("student", 2, 100)


# --- a student of a trained teacher -------------------------------------------------------

CRPS_TOLERANCE = 0.15
"""Relative CRPS tolerance of the 4-evaluation student against its 20-step teacher on the
tiny model (a ~100 k-parameter teacher trained for a minute on 450 objects, distilled for a
few seconds); measured 0.9-1.03 x the teacher's."""


@pytest.fixture(scope="module")
def distilled(trained_tiny, tmp_path_factory):
    """A copy of the tiny model with 4- and 1-evaluation students (a few epochs)."""
    import shutil

    model = tmp_path_factory.mktemp("distilled") / "model"
    shutil.copytree(trained_tiny.model, model, ignore=shutil.ignore_patterns("training"))
    status = main(
        [
            "train",
            "distill",
            "--model",
            str(model),
            "--data",
            str(trained_tiny.trainset),
            "--evaluations",
            "4,1",
            "--epochs",
            "6",
            "--batch-size",
            "256",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert status == 0
    return model


@pytest.fixture(scope="module")
def catalog_table(trained_tiny):
    catalog = open_catalog(trained_tiny.catalog)
    import pandas as pd

    tables = [read_partition(p, list(catalog.columns)) for p in catalog.partitions]
    table = pd.concat(tables, ignore_index=True)
    truth = pd.read_parquet(trained_tiny.truth).set_index("OBJECT_ID")
    return table, truth.loc[table["OBJECT_ID"].to_numpy(), "Z"].to_numpy()


@pytest.mark.slow
def test_students_are_stored_with_their_sha256_and_used_by_default(distilled):
    config = read_config(distilled)
    section = config.student
    assert section.method == "progressive" and section.teacher_sha256 == config.diffusion.weights.sha256
    assert sorted(section.samplers) == [1, 4] and section.default == ProductionSetting(4, defaults.N_SAMPLES)
    for n, entry in section.samplers.items():
        assert entry.weights.file == f"student-{n}.safetensors" and verified_path(distilled, entry.weights)
        assert entry.nodes == DEFAULT_NODES[n] and entry.evaluations == n
        validation = entry.training.validation
        assert validation["sampler"] == "student" and validation["teacher"]["sampler"] == "dpmpp2m"
        assert validation["pdf"]["n"] == validation["teacher"]["pdf"]["n"] > 0
    model = load_model(distilled)
    assert sorted(model.students) == [1, 4]
    assert all(s.evaluations == n and not s.training for n, s in model.students.items())
    # the students' weights differ from the teacher's (they were trained)
    teacher = model.diffusion.net.state_dict()
    assert any(not torch.equal(v, teacher[k]) for k, v in model.students[4].net.state_dict().items())
    options = RunOptions().resolved(config)
    assert (options.sampler, options.steps, options.n_samples) == ("student", 4, defaults.N_SAMPLES)


@pytest.mark.slow
def test_student_crps_is_within_tolerance_of_its_teacher(distilled, catalog_table):
    table, z_true = catalog_table
    model = load_model(distilled)
    ids = table["OBJECT_ID"].to_numpy()
    teacher = predict(model, table, ids, n_samples=64, sampler="dpmpp2m", seed=1)
    student = predict(model, table, ids, n_samples=64, seed=1)  # the default: the 4-evaluation student
    direct = predict(model, table, ids, n_samples=64, sampler="student", steps=4, seed=1)
    assert np.array_equal(student.z_samples, direct.z_samples, equal_nan=True)
    ok = np.isfinite(teacher.z_samples).all(axis=1)
    crps_teacher = np.mean(crps(teacher.z_samples[ok], z_true[ok]))
    crps_student = np.mean(crps(student.z_samples[ok], z_true[ok]))
    assert abs(crps_student / crps_teacher - 1) < CRPS_TOLERANCE, (crps_student, crps_teacher)
    # a 1-evaluation student is a working sampler too, and no sample is shared with the teacher
    one = predict(model, table, ids, n_samples=64, sampler="student", steps=1, seed=1)
    assert np.isfinite(one.z_samples[ok]).all() and not np.any(one.z_samples[ok] == teacher.z_samples[ok])


@pytest.mark.slow
def test_the_production_setting_is_what_predict_samples_by_default(distilled, catalog_table, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(distilled, model_dir, ignore=shutil.ignore_patterns("training"))
    set_production_default(model_dir, 1, 24)
    with pytest.raises(ModelDirectoryError, match="no 2-evaluation student"):
        set_production_default(model_dir, 2, 24)
    table, _ = catalog_table
    ids = table["OBJECT_ID"].to_numpy()[:30]
    model = load_model(model_dir)
    auto = predict(model, table.iloc[:30], ids, seed=2)
    one = predict(model, table.iloc[:30], ids, seed=2, sampler="student", steps=1, n_samples=24)
    assert auto.z_samples.shape == (30, 24) and np.array_equal(auto.z_samples, one.z_samples, equal_nan=True)
    # a teacher setting (no student passed the rule) is what "auto" samples with then
    set_production_default(model_dir, 6, 40, sampler="dpmpp2m")
    model = load_model(model_dir)
    auto = predict(model, table.iloc[:30], ids, seed=2)
    six = predict(model, table.iloc[:30], ids, seed=2, sampler="dpmpp2m", steps=6, n_samples=40)
    assert auto.z_samples.shape == (30, 40) and np.array_equal(auto.z_samples, six.z_samples, equal_nan=True)


@pytest.mark.slow
def test_a_student_of_other_diffusion_weights_is_refused_and_retraining_drops_it(
    distilled, trained_tiny, tmp_path
):
    model_dir = tmp_path / "model"
    shutil.copytree(distilled, model_dir, ignore=shutil.ignore_patterns("training"))
    content = json.loads((model_dir / CONFIG).read_text())
    stale = content | {"student": content["student"] | {"teacher_sha256": "0" * 64}}
    (model_dir / CONFIG).write_text(json.dumps(stale))  # as if the teacher had been swapped by hand
    with pytest.raises(ModelDirectoryError, match="distilled from other diffusion weights"):
        load_model(model_dir)
    (model_dir / CONFIG).write_text(json.dumps(content))
    args = ["train", "diffusion", "--data", str(trained_tiny.trainset), "--model", str(model_dir)]
    assert main([*args, "--preset", "tiny", "--epochs", "1", "--device", "cpu", "--no-progress"]) == 0
    config = read_config(model_dir)
    assert (
        config.student is None
        and config.diffusion.weights.sha256 != content["diffusion"]["weights"]["sha256"]
    )
    assert load_model(model_dir).students == {}
    assert sorted(model_dir.glob("student-*")) == []  # their files are removed with the section


@pytest.mark.slow
def test_run_samples_with_the_student_by_default(distilled, trained_tiny, catalog_table, tmp_path, capsys):
    import pandas as pd
    import xarray as xr

    options = ["--no-progress", "--n-workers", "1", "--memory-limit", "2GiB", "--dashboard-address", ":0"]
    run = ["run", "--input", str(trained_tiny.catalog), "--model", str(distilled), *options]
    assert main([*run, "--out", str(tmp_path / "pz.zarr")]) == 0
    store = xr.open_zarr(tmp_path / "pz.zarr")
    config = json.loads(store.attrs["config"])  # nested attributes are JSON text in xarray
    assert {k: config[k] for k in ("sampler", "steps", "n_samples")} == {
        "sampler": "student",
        "steps": 4,
        "n_samples": defaults.N_SAMPLES,
    }
    table, _ = catalog_table
    expected = predict(load_model(distilled), table, table["OBJECT_ID"].to_numpy())
    stored = pd.Series(store["z_median"].values, index=store["object_id"].values)[store["valid"].values == 1]
    got = stored.loc[table["OBJECT_ID"].to_numpy()].to_numpy()
    np.testing.assert_allclose(got, expected.summaries["z_median"], atol=1e-6, equal_nan=True)
    capsys.readouterr()
    assert main([*run, "--out", str(tmp_path / "no.zarr"), "--sampler", "student", "--steps", "2"]) == 2
    assert "no 2-evaluation student; it has [1, 4]" in capsys.readouterr().err
    assert not (tmp_path / "no.zarr").exists()


def test_a_model_without_students_runs_the_teacher_by_default():
    """``run`` without --sampler on a model without students samples with dpmpp2m, 100 samples."""
    options = RunOptions().resolved(dataclasses.replace(read_config(default_model_dir()), student=None))
    assert (options.sampler, options.steps, options.n_samples) == ("dpmpp2m", None, defaults.N_SAMPLES)


def test_cost_model_is_monotone():
    model = tiny_model()
    assert flop_per_galaxy(model, 1, 64) < flop_per_galaxy(model, 2, 64) < flop_per_galaxy(model, 20, 100)
    assert math.isclose(flop_per_galaxy(model, 20, 100) / flop_per_galaxy(model, 2, 100), 10, rel_tol=0.02)


def test_the_gpu_benchmarks_numpy_metrics_match_the_package_metrics():
    """benchmarks/sampler.py runs without pandas/scoringrules: its metrics must be metrics.py's."""
    from benchmarks.sampler import numpy_metrics
    from specdiff_catalog.metrics import pdf_metrics, point_metrics
    from specdiff_catalog.summaries import sample_quantiles

    rng = np.random.default_rng(3)
    z_true = rng.uniform(0.05, 0.8, 400)
    z = z_true[:, None] + rng.normal(0.01, 0.03, (400, 64)) * (1 + z_true[:, None])
    got = numpy_metrics(z, z_true)
    pdf = pdf_metrics(z, z_true)
    point = point_metrics(sample_quantiles(z, [0.5])[:, 0], z_true)
    assert got["n"] == pdf.n == 400
    assert got["crps"] == pytest.approx(pdf.crps, rel=1e-12)
    assert got["pit_ks"] == pytest.approx(pdf.pit_ks, abs=1e-12)
    assert got["sigma_nmad"] == pytest.approx(point.sigma_nmad, rel=1e-12)
