"""One Dask task per work item, handed out by the scheduler to whichever workers are connected now.

The client keeps a window of tasks submitted ahead (at least ``MIN_WINDOW`` and four
per worker thread connected now, re-read every ``POLL_SECONDS``); the tasks carry no
worker or resource restrictions, so Dask's scheduler-side queuing
(``distributed.scheduler.worker-saturation``) holds them on the scheduler and hands
each worker about one per thread as it frees up. A worker that joins later takes
tasks from that queue at once; a worker that leaves has its running tasks rescheduled
elsewhere by the scheduler (``distributed.scheduler.allowed-failures`` deaths per task,
then the task fails with ``KilledWorker``). The client holds at most the window's
futures and one batch of results (per-item outcomes, not data), so its memory does not
grow with the number of items.

A run whose workers keep dying, or which has had no worker for too long, stops (``Stop``)
instead of waiting forever: ``StopRules``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distributed import Client, Future, as_completed

MIN_WINDOW = 256
"""Tasks submitted ahead of the workers, at least: enough for workers joining at once to
find tasks queued, and more than twice the threads of most clusters, so the scheduler
treats the tasks as root tasks and queues them (``Scheduler.is_rootish``)."""
TASKS_PER_THREAD = 4
POLL_SECONDS = 2.0
"""How often the client re-reads the connected workers (window size, no-worker timer)."""
TICK_SECONDS = 0.05
GATHER_SECONDS = 10.0
"""How long a finished task's result may take to arrive before it counts as lost with
its worker (and the task as recomputing)."""


@dataclass(frozen=True)
class StopRules:
    """When a run stops instead of waiting.

    max_worker_deaths: worker processes lost while running tasks (their connection
    dropped, or their nanny killed them over the memory limit) with no task finished in
    between. no_worker_seconds: how long to wait with no worker able to run tasks (none
    connected, or every one paused over its memory limit's pause line), once one has
    been (before the first one joins, e.g. SLURM jobs still queued, a run waits as long
    as it takes).
    """

    max_worker_deaths: int = 10
    no_worker_seconds: float = 300.0


@dataclass(frozen=True)
class Stop:
    """Why a run stopped early. cause: "memory" (workers killed over their memory limit),
    "died" (workers lost otherwise) or "no-workers"; message: one line for the user."""

    cause: str
    message: str


class WorkerDeaths:
    """Worker processes lost since the last task that finished, from the scheduler's events.

    A death is a worker removed while it was running tasks without having been retired
    (topic ``all``, action ``remove-worker``), or a worker process its nanny killed over
    the memory limit (topic ``worker-restart-memory``, one per process id, which also
    counts workers killed while starting, before they ever connect). A memory kill of a
    running worker shows as both and counts once.
    """

    TOPICS = ("all", "worker-restart-memory")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._removed: set[str] = set()
        self._memory: dict[tuple[str, int], int] = {}  # (address, pid) -> resident bytes when killed
        self.memory_kills = 0  # over the whole run
        client.subscribe_topic("all", self._on_all)
        client.subscribe_topic("worker-restart-memory", self._on_memory)

    def _on_all(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if msg.get("action") == "remove-worker" and not msg.get("expected") and msg.get("processing-tasks"):
            with self._lock:
                self._removed.add(str(msg["worker"]))

    def _on_memory(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        with self._lock:
            self._memory[(str(msg.get("worker")), int(msg.get("pid") or 0))] = int(msg.get("rss") or 0)
            self.memory_kills += 1

    def progress(self) -> None:
        """A task finished: the workers are doing work, start counting again."""
        with self._lock:
            self._removed.clear()
            self._memory.clear()

    def count(self) -> int:
        with self._lock:
            memory_workers = {address for address, _ in self._memory}
            return len(self._memory) + len(self._removed - memory_workers)

    def verdict(self, limit: int) -> Stop | None:
        """A ``Stop`` once ``limit`` deaths have been seen since the last finished task."""
        deaths = self.count()
        if deaths < limit:
            return None
        with self._lock:
            killed = len(self._memory)
            rss = max(self._memory.values(), default=0)
        if killed:
            return Stop(
                "memory",
                f"{deaths} worker processes died without a task finishing in between; {killed} were "
                f"killed by their nanny for exceeding the worker memory limit (up to {rss / 2**20:.0f} MiB "
                "resident)",
            )
        return Stop(
            "died",
            f"{deaths} worker processes died while running tasks without a task finishing in between "
            "(killed by a signal, the system's out-of-memory killer or a crash; see the worker logs)",
        )

    def close(self) -> None:
        for topic in self.TOPICS:
            self._client.unsubscribe_topic(topic)


@dataclass
class Outcome:
    """A finished item: its task's return value, or the error (one line) after every retry."""

    item: Any
    value: Any = None
    error: str = ""


def run_tasks(
    client: Client,
    func: Callable[..., Any],
    items: Sequence[Any],
    key: Callable[[Any], str],
    on_outcome: Callable[[Outcome], None],
    *,
    kwargs: dict[str, Any] | None = None,
    window: int | None = None,
    retries: int = 2,
    rules: StopRules = StopRules(),
) -> Stop | None:
    """``func(item, **kwargs)`` for every item on the client's cluster; ``on_outcome`` for each as it lands.

    Items are submitted in order (earlier ones run first), ``window`` at a time (None:
    follow the workers connected now). Returns None when every item has an outcome, or
    the ``Stop`` that ended the run early (the items still unfinished are cancelled and
    get no outcome).
    """
    kwargs = kwargs or {}
    pending = as_completed(with_results=False)
    live: dict[str, tuple[Future, Any]] = {}  # key -> (future, item), the window's tasks
    deaths = WorkerDeaths(client)
    watch = _WorkerWatch(client, rules.no_worker_seconds)
    submitted = 0
    try:
        while submitted < len(items) or not pending.is_empty():
            threads = watch.poll()
            room = (window or max(MIN_WINDOW, TASKS_PER_THREAD * threads)) - pending.count()
            if room > 0 and submitted < len(items):
                batch = items[submitted : submitted + room]
                futures = client.map(
                    func, batch, key=[key(item) for item in batch], retries=retries, pure=False, **kwargs
                )
                live.update((str(f.key), (f, item)) for f, item in zip(futures, batch, strict=True))
                pending.update(futures)
                submitted += len(batch)
            for outcome in _outcomes(_ready(pending), live, pending):
                if not outcome.error:
                    deaths.progress()
                elif outcome.error.startswith("KilledWorker") and deaths.memory_kills:
                    outcome.error += (
                        f" ({deaths.memory_kills} worker processes were killed over their memory limit)"
                    )
                on_outcome(outcome)
            stop = deaths.verdict(rules.max_worker_deaths) or watch.verdict()
            if stop is not None:
                client.cancel([future for future, _ in live.values()])
                return stop
        return None
    finally:
        deaths.close()


def _ready(pending: as_completed) -> list[Future]:
    """The futures finished now, waiting up to ``TICK_SECONDS`` for the first one."""
    deadline = time.monotonic() + TICK_SECONDS
    while not pending.has_ready() and not pending.is_empty() and time.monotonic() < deadline:
        time.sleep(0.005)
    return pending.next_batch(block=False)


def _outcomes(
    done: list[Future], live: dict[str, tuple[Future, Any]], pending: as_completed
) -> list[Outcome]:
    """Outcomes of finished futures: values, or errors one line each.

    A result that does not arrive within ``GATHER_SECONDS`` was lost with its worker (a
    worker retired or died after the task finished): the scheduler recomputes the task,
    so its future goes back into ``pending`` and gets no outcome now.
    """
    outcomes = []
    for future in done:
        if future.status == "lost":  # its result left with its worker: the task is recomputing
            pending.add(future)
            continue
        if future.status not in ("error", "cancelled"):
            try:
                value = future.result(timeout=GATHER_SECONDS)
            except TimeoutError:  # lost after the status was read
                pending.add(future)
                continue
            except Exception:  # recomputed meanwhile, and that failed: an error below
                pass
            else:
                outcomes.append(Outcome(live.pop(str(future.key))[1], value))
                continue
        outcomes.append(Outcome(live.pop(str(future.key))[1], error=_one_line(future)))
    return outcomes


def _one_line(future: Future) -> str:
    if future.status == "cancelled":
        return "CancelledError: the scheduler cancelled the task"
    err = future.exception()
    return f"{type(err).__name__}: {err}".splitlines()[0]


class _WorkerWatch:
    """Threads of the workers able to run tasks now (connected, not paused), re-read every
    ``POLL_SECONDS``; the timer of how long there have been none."""

    def __init__(self, client: Client, no_worker_seconds: float) -> None:
        self._client = client
        self._limit = no_worker_seconds
        self._next = 0.0
        self._threads = 0
        self._paused = 0
        self._seen = False
        self._none_since: float | None = None

    def poll(self) -> int:
        now = time.monotonic()
        if now >= self._next:
            workers = self._client.scheduler_info()["workers"].values()
            self._threads = sum(w["nthreads"] for w in workers if w.get("status") == "running")
            self._paused = sum(1 for w in workers if w.get("status") == "paused")
            self._next = now + POLL_SECONDS
            self._seen = self._seen or self._threads > 0
            self._none_since = None if self._threads else (self._none_since or now)
        return self._threads

    def verdict(self) -> Stop | None:
        if not self._seen or self._none_since is None:
            return None
        idle = time.monotonic() - self._none_since
        if idle < self._limit:
            return None
        if self._paused:
            return Stop(
                "memory",
                f"for {idle:.0f} s every connected worker ({self._paused}) has been paused: their memory is "
                "above the fraction of their limit at which Dask stops giving them tasks",
            )
        return Stop(
            "no-workers",
            f"no worker has been connected for {idle:.0f} s (every worker left or failed to restart)",
        )
