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


def test_slurm_job_script_requests_gpus_and_worker_resources():
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(
        kind="slurm",
        dashboard_address=":0",
        slurm=SlurmOptions(
            queue="gpu", account="proj", walltime="01:30:00", cores=16, memory="64GiB", gpus_per_job=2
        ),
    )
    with dask_jobqueue.SLURMCluster(**slurm_cluster_options(config)) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH -t 01:30:00", "#SBATCH --gpus=2"):
        assert line in script
    assert "--resources GPU=2" in script
