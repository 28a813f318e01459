"""Dask cluster set-up: local processes, local GPUs, a running scheduler, or SLURM jobs.

Every choice gives a real ``distributed.Client``; the caller owns no cluster details.
dask-cuda and dask-jobqueue are optional extras, imported only when asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client, LocalCluster

KINDS = ("auto", "local", "cuda", "slurm")


@dataclass
class ClusterConfig:
    """How to get Dask workers.

    kind: auto (LocalCUDACluster when GPUs and dask-cuda are present, else processes),
    local, cuda, or slurm (dask-jobqueue). scheduler_address / scheduler_file connect
    to a running scheduler instead (the HPC pattern) and override kind.
    memory_limit: per worker, e.g. "4GiB" or "auto". dashboard_address: ":8787", or
    ":0" for any free port.
    """

    kind: str = "auto"
    scheduler_address: str | None = None
    scheduler_file: Path | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str = "auto"
    dashboard_address: str = ":8787"
    slurm: SlurmOptions | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown cluster kind {self.kind!r}; choose one of {', '.join(KINDS)}")


@dataclass
class SlurmOptions:
    """dask-jobqueue SLURMCluster options for ``--cluster slurm``; None: from jobqueue.yaml.

    Every option left None is read by dask-jobqueue from its configuration
    (``jobqueue.slurm.*`` in ~/.config/dask/jobqueue.yaml), never overridden with an
    empty value. qos, constraint and gpus_per_job become ``#SBATCH --qos/--constraint/--gpus``
    lines added to the configuration's ``job-extra-directives``. cores: CPU cores per job;
    memory: per job, e.g. "32GiB". gpus_per_job: 0 (CPU workers) or 1 (one GPU worker per job).
    """

    queue: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    walltime: str | None = None
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    gpus_per_job: int = 0
    local_directory: str | None = None
    job_extra_directives: list[str] = field(default_factory=list)


def gpu_count() -> int:
    """Number of CUDA devices this process can see (0 without a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _has_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kind(config: ClusterConfig) -> str:
    """The concrete kind ``auto`` stands for on this machine."""
    if config.kind != "auto":
        return config.kind
    return "cuda" if gpu_count() > 0 and _has_dask_cuda() else "local"


def _local_cluster(config: ClusterConfig) -> LocalCluster:
    cores = os.cpu_count() or 1
    threads = config.threads_per_worker or 1
    workers = config.n_workers or max(1, cores // threads)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=config.memory_limit,
        dashboard_address=config.dashboard_address,
    )


def _cuda_cluster(config: ClusterConfig):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as err:
        raise RuntimeError("--cluster cuda needs dask-cuda: pip install 'specdiff-catalog[gpu]'") from err
    kwargs = {"n_workers": config.n_workers} if config.n_workers else {}
    return LocalCUDACluster(
        threads_per_worker=config.threads_per_worker or 1,
        memory_limit=config.memory_limit,
        dashboard_address=config.dashboard_address,
        **kwargs,
    )


def _jobqueue_setting(name: str):
    """``jobqueue.slurm.<name>`` from dask's configuration (jobqueue.yaml); None when unset."""
    import dask

    return dask.config.get(f"jobqueue.slurm.{name}", None)


def slurm_cluster_options(config: ClusterConfig) -> dict:
    """Keyword arguments of dask_jobqueue.SLURMCluster for ``config``.

    Only what ``config.slurm`` sets is passed, so jobqueue.yaml supplies the rest; the
    lists and dicts we must extend (job-extra-directives, scheduler-options) are the
    configuration's plus ours. CPU jobs run one single-threaded worker process per core
    (as ``--cluster local``) unless jobqueue.yaml sets ``processes``; a GPU job runs one
    single-threaded worker (one partition at a time on its GPU) and asks SLURM for
    ``cores`` CPUs (``job_cpu``).
    """
    opts = config.slurm or SlurmOptions()
    if opts.gpus_per_job not in (0, 1):
        raise ValueError(
            f"--slurm-gpus {opts.gpus_per_job}: a worker job drives one GPU; "
            "use --slurm-gpus 1 and --slurm-jobs N for N GPUs"
        )
    cores = opts.cores or _jobqueue_setting("cores")
    memory = opts.memory or _jobqueue_setting("memory")
    if cores is None or memory is None:
        raise ValueError(
            "--cluster slurm needs the cores and memory of a worker job: --slurm-cores and --slurm-memory, "
            "or cores and memory under jobqueue: slurm: in ~/.config/dask/jobqueue.yaml"
        )
    extra = [
        f"--{name}={value}"
        for name, value in (("qos", opts.qos), ("constraint", opts.constraint), ("gpus", opts.gpus_per_job))
        if value
    ] + list(opts.job_extra_directives)
    kwargs: dict = {
        "queue": opts.queue,
        "account": opts.account,
        "walltime": opts.walltime,
        "memory": opts.memory,
        "local_directory": opts.local_directory,
        "scheduler_options": {
            **(_jobqueue_setting("scheduler-options") or {}),
            "dashboard_address": config.dashboard_address,
        },
    }
    if extra:
        kwargs["job_extra_directives"] = list(_jobqueue_setting("job-extra-directives") or []) + extra
    if opts.gpus_per_job:
        kwargs |= {"cores": 1, "processes": 1, "job_cpu": int(cores)}
    else:
        kwargs |= {"cores": opts.cores, "processes": None if _jobqueue_setting("processes") else int(cores)}
    return {k: v for k, v in kwargs.items() if v is not None}


def worker_memory_limit(config: ClusterConfig) -> int | None:
    """Memory limit in bytes of each worker this run will start; None when it starts none
    (a running scheduler: its workers come with their own limits) or sets no limit."""
    import logging

    from dask.utils import parse_bytes
    from distributed.worker_memory import parse_memory_limit

    if config.scheduler_file is not None or config.scheduler_address is not None:
        return None
    kind = resolve_kind(config)
    if kind == "slurm":
        options = slurm_cluster_options(config)
        memory = options.get("memory") or _jobqueue_setting("memory")
        processes = options.get("processes") or _jobqueue_setting("processes") or 1
        return int(parse_bytes(memory) / processes)
    threads = config.threads_per_worker or 1
    workers = config.n_workers or (
        gpu_count() if kind == "cuda" else max(1, (os.cpu_count() or 1) // threads)
    )
    return parse_memory_limit(
        config.memory_limit, threads, total_cores=workers * threads, logger=logging.getLogger(__name__)
    )


def _slurm_cluster(config: ClusterConfig):
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as err:
        raise RuntimeError(
            "--cluster slurm needs dask-jobqueue: pip install 'specdiff-catalog[hpc]'"
        ) from err
    cluster = SLURMCluster(**slurm_cluster_options(config))
    cluster.scale(jobs=(config.slurm or SlurmOptions()).jobs)
    return cluster


_FACTORIES = {"local": _local_cluster, "cuda": _cuda_cluster, "slurm": _slurm_cluster}
START_ATTEMPTS = 2
"""Tries at starting a local cluster: a worker process that dies while it starts (killed,
out of memory) makes LocalCluster raise "Nanny failed to start."; the next try usually
works, and a worker that dies every time is not worth a third."""


class ClusterStartError(OSError):
    """The local Dask cluster did not start (START_ATTEMPTS tries); the message says why."""


def _start_cluster(config: ClusterConfig):
    """The cluster of ``config``'s kind, started again when a worker died while it started."""
    factory = _FACTORIES[resolve_kind(config)]
    failure = ""
    for _ in range(START_ATTEMPTS):
        try:
            return factory(config)
        except RuntimeError as err:  # distributed: "Nanny failed to start." (cause: the worker process)
            if "failed to start" not in str(err):
                raise
            failure = f"{err} ({err.__cause__})" if err.__cause__ else str(err)
            print(f"note: {failure}: a worker process died while starting", file=sys.stderr, flush=True)
    raise ClusterStartError(
        f"the local Dask cluster did not start in {START_ATTEMPTS} tries ({failure}): its worker "
        "processes die while starting (out of memory? a broken environment? see the lines above)"
    )


@contextmanager
def connect(config: ClusterConfig) -> Iterator[Client]:
    """A Client for ``config``; a cluster started here is closed on exit. A local cluster whose
    worker died while starting is started again once (``START_ATTEMPTS``), then
    ClusterStartError."""
    if config.scheduler_file is not None:
        with Client(scheduler_file=str(config.scheduler_file)) as client:
            yield client
        return
    if config.scheduler_address is not None:
        with Client(config.scheduler_address) as client:
            yield client
        return
    with _start_cluster(config) as cluster, Client(cluster) as client:
        yield client


def dashboard_link(client: Client) -> str | None:
    """The dashboard URL of the client's scheduler (None when it has none)."""
    try:
        return client.dashboard_link
    except (AttributeError, KeyError):
        return None
