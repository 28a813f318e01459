"""run_tasks on real local clusters: every item once, a bounded window, errors, and the stop rules."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster, as_completed, wait

from specdiff_catalog.pipeline import schedule
from specdiff_catalog.pipeline.schedule import MIN_WINDOW, Outcome, StopRules, run_tasks


def double(item: int) -> int:
    if item == 7:
        raise ValueError(f"item {item} is bad\nsecond line")
    return 2 * item


def die(item: int) -> int:
    """Kills the worker process running it (its nanny starts a new one)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return item


def hog(item: int) -> int:
    """Holds 600 MB resident until its nanny kills the worker over its memory limit."""
    block = np.ones(600 * 10**6 // 8)
    time.sleep(30)
    return int(block[0]) + item


def slow(item: int) -> int:
    time.sleep(0.2)
    return item


def _scheduler_tasks(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


@pytest.fixture
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", memory_limit="2GiB") as c:
        yield c


def test_every_item_once_with_its_value_or_one_line_error_and_a_bounded_window(cluster):
    outcomes: list[Outcome] = []
    held: list[int] = []
    with Client(cluster) as client:

        def record(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if len(outcomes) % 250 == 0:
                held.append(client.run_on_scheduler(_scheduler_tasks))

        stop = run_tasks(client, double, list(range(3000)), key=lambda i: f"double-{i}", on_outcome=record)
    assert stop is None
    assert sorted(o.item for o in outcomes) == list(range(3000))
    assert all(o.value == 2 * o.item for o in outcomes if o.item != 7)
    (bad,) = [o for o in outcomes if o.item == 7]
    assert bad.error == "ValueError: item 7 is bad" and bad.value is None
    assert max(held) <= 2 * MIN_WINDOW, "the scheduler held more tasks than the window"


def test_items_run_in_order_on_one_worker():
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        outcomes: list[Outcome] = []
        run_tasks(client, slow, list(range(12)), key=lambda i: f"slow-{i}", on_outcome=outcomes.append)
    assert [o.item for o in outcomes] == list(range(12))


def test_workers_that_keep_dying_stop_the_run_with_the_cause(cluster):
    outcomes: list[Outcome] = []
    with Client(cluster) as client:
        stop = run_tasks(
            client,
            die,
            list(range(4)),
            key=lambda i: f"die-{i}",
            on_outcome=outcomes.append,
            rules=StopRules(max_worker_deaths=3),
        )
    assert stop is not None and stop.cause == "died"
    deaths = int(stop.message.split()[0])
    assert deaths >= 3 and "worker processes died while running tasks" in stop.message
    assert not [o for o in outcomes if not o.error]


def test_workers_killed_over_their_memory_limit_stop_the_run_naming_memory():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, dashboard_address=":0", memory_limit="400MB"
        ) as cluster,
        Client(cluster) as client,
    ):
        stop = run_tasks(
            client,
            hog,
            [0, 1],
            key=lambda i: f"hog-{i}",
            on_outcome=lambda o: None,
            rules=StopRules(max_worker_deaths=2),
        )
    assert stop is not None and stop.cause == "memory"
    assert "killed by their nanny for exceeding the worker memory limit" in stop.message


def test_a_run_left_without_workers_stops_after_the_grace_time(cluster):
    outcomes: list[Outcome] = []
    with Client(cluster) as client:

        def record(outcome: Outcome) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 3:
                cluster.scale(0)  # every worker retires: no death, just nobody left

        stop = run_tasks(
            client,
            slow,
            list(range(200)),
            key=lambda i: f"slow-{i}",
            on_outcome=record,
            rules=StopRules(no_worker_seconds=3),
        )
    assert stop is not None and stop.cause == "no-workers"
    assert stop.message.startswith("no worker has been connected for")
    assert 3 <= len(outcomes) < 200


def test_a_result_lost_with_its_retired_worker_goes_back_to_waiting_instead_of_hanging(cluster):
    """The finished task's result lived on a worker that retired: no outcome, no hang."""
    with Client(cluster) as client:
        future = client.submit(slow, 5, key="slow-5", pure=False)
        wait(future)
        pending = as_completed(with_results=False)
        cluster.scale(0)
        while client.scheduler_info()["workers"]:
            time.sleep(0.05)
        live = {"slow-5": (future, 5)}
        started = time.monotonic()
        outcomes = schedule._outcomes([future], live, pending)
        waited = time.monotonic() - started
    assert outcomes == [] and "slow-5" in live and pending.count() == 1, future.status
    assert waited < schedule.GATHER_SECONDS + 5
