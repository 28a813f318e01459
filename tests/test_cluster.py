"""Cluster set-up: real local clusters, and the SLURM job script dask-jobqueue would submit."""

import urllib.request

import pytest

from specdiff_catalog.pipeline.cluster import (
    ClusterConfig,
    SlurmOptions,
    connect,
    dashboard_link,
    resolve_kind,
    slurm_cluster_options,
    worker_memory_limit,
)


def test_auto_without_gpus_is_a_local_process_cluster_with_a_dashboard():
    config = ClusterConfig(n_workers=2, dashboard_address=":0", memory_limit="1GiB")
    assert resolve_kind(config) == "local"
    with connect(config) as client:
        assert sum(client.nthreads().values()) == 2
        assert urllib.request.urlopen(dashboard_link(client), timeout=10).status == 200
        assert client.submit(lambda x: x + 1, 41).result() == 42


def test_scheduler_address_connects_to_a_running_scheduler():
    with connect(ClusterConfig(n_workers=1, dashboard_address=":0")) as first:
        address = first.scheduler.address
        with connect(ClusterConfig(scheduler_address=address)) as second:
            assert second.submit(sum, [1, 2]).result() == 3


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown cluster kind 'gpu'"):
        ClusterConfig(kind="gpu")


def test_slurm_job_script_requests_a_gpu_and_one_single_threaded_worker():
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(
        kind="slurm",
        dashboard_address=":0",
        slurm=SlurmOptions(
            queue="gpu",
            account="proj",
            qos="regular",
            constraint="a100",
            walltime="01:30:00",
            cores=16,
            memory="64GiB",
            gpus_per_job=1,
        ),
    )
    with dask_jobqueue.SLURMCluster(**slurm_cluster_options(config)) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p gpu",
        "#SBATCH -A proj",
        "#SBATCH -t 01:30:00",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=64G",
        "#SBATCH --qos=regular",
        "#SBATCH --constraint=a100",
        "#SBATCH --gpus=1",
    ):
        assert line in script
    assert "--nthreads 1" in script and "--nworkers" not in script  # one process
    assert worker_memory_limit(config) == 64 * 2**30


JOBQUEUE_YAML = {
    "jobqueue.slurm.queue": "regular",
    "jobqueue.slurm.account": "m4321",
    "jobqueue.slurm.walltime": "03:00:00",
    "jobqueue.slurm.cores": 32,
    "jobqueue.slurm.memory": "128GiB",
    "jobqueue.slurm.job-extra-directives": ["--reservation=survey", "--licenses=scratch"],
    "jobqueue.slurm.scheduler-options": {"port": 8786},
}


def test_slurm_options_not_given_come_from_jobqueue_yaml():
    """Nothing None or empty is passed to SLURMCluster: the user's jobqueue.yaml settings survive."""
    import dask

    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(kind="slurm", dashboard_address=":0", slurm=SlurmOptions(jobs=2))
    with dask.config.set(JOBQUEUE_YAML):
        kwargs = slurm_cluster_options(config)
        assert all(v not in (None, [], {}, "") for v in kwargs.values()), kwargs
        assert set(kwargs) == {"scheduler_options", "processes"}
        assert kwargs["scheduler_options"] == {"port": 8786, "dashboard_address": ":0"}
        with dask_jobqueue.SLURMCluster(
            **{**kwargs, "scheduler_options": {"dashboard_address": ":0"}}
        ) as cluster:
            script = cluster.job_script()
        assert worker_memory_limit(config) == 4 * 2**30  # 128 GiB over 32 single-threaded workers
    for line in (
        "#SBATCH -p regular",
        "#SBATCH -A m4321",
        "#SBATCH -t 03:00:00",
        "#SBATCH --reservation=survey",
        "#SBATCH --licenses=scratch",
        "#SBATCH --cpus-per-task=32",
    ):
        assert line in script
    assert "--nworkers 32" in script and "--nthreads 1" in script


def test_slurm_gpu_directives_are_added_to_the_yaml_ones():
    import dask

    config = ClusterConfig(kind="slurm", slurm=SlurmOptions(gpus_per_job=1, qos="debug"))
    with dask.config.set(JOBQUEUE_YAML):
        kwargs = slurm_cluster_options(config)
    assert kwargs["job_extra_directives"] == [
        "--reservation=survey",
        "--licenses=scratch",
        "--qos=debug",
        "--gpus=1",
    ]
    assert (kwargs["cores"], kwargs["processes"], kwargs["job_cpu"]) == (1, 1, 32)


def test_slurm_without_cores_or_memory_anywhere_is_refused_in_one_line():
    import dask

    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(ValueError, match="--slurm-cores and --slurm-memory, or cores and memory") as err:
            slurm_cluster_options(ClusterConfig(kind="slurm", slurm=SlurmOptions()))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="a worker job drives one GPU"):
        slurm_cluster_options(
            ClusterConfig(kind="slurm", slurm=SlurmOptions(cores=8, memory="8GiB", gpus_per_job=2))
        )


def test_worker_memory_limit_of_local_workers_and_of_a_running_scheduler():
    assert worker_memory_limit(ClusterConfig(kind="local", n_workers=2, memory_limit="3GiB")) == 3 * 2**30
    assert worker_memory_limit(ClusterConfig(kind="local", memory_limit="0")) is None
    assert worker_memory_limit(ClusterConfig(scheduler_address="tcp://127.0.0.1:8786")) is None
