"""`clusterctl bench`: the lecture's lesson measured on a running cluster, next to a LocalCluster.

Three figures, each the median of several repeats: the scheduler's per-task overhead (a batch of
no-op tasks, wall time per task), throughput with every worker thread busy (short sleeping
tasks), and worker-to-worker bandwidth (one large result moved to a worker on another host).
The tasks are builtins (``int``, ``time.sleep``, ``os.urandom``, ``len``), so the hosts need
nothing but dask and distributed. Every key created is released before the call returns.

Besides ``scheduler_api``, the one module that imports distributed (lazily).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterctl.errors import ClusterctlError, SchedulerUnreachableError
from clusterctl.tls import TlsFiles

BUSY_TASK_SECONDS = 0.005


@dataclass
class Figures:
    """One cluster's figures; None where it could not be measured (with the reason in ``notes``)."""

    overhead_ms: float | None = None
    throughput: float | None = None  # tasks per second with every thread busy
    ideal_throughput: float | None = None  # threads / task duration
    bandwidth_mb_s: float | None = None
    transfer: str | None = None  # "worker A -> worker B", or why not measured
    workers: int = 0
    threads: int = 0
    notes: list[str] = field(default_factory=list)
    keys: set[str] = field(default_factory=set, repr=False)  # every key the run created, to release


@dataclass
class BenchSettings:
    tasks: int = 1000
    repeats: int = 3
    transfer_mb: int = 64


def _median_of(repeats: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeats))


def measure(client: Any, settings: BenchSettings, step: Callable[[str], None]) -> Figures:
    """The three figures on the cluster ``client`` is connected to."""
    from distributed import wait

    info = client.scheduler_info()
    workers = info["workers"]
    figures = Figures(workers=len(workers), threads=sum(w["nthreads"] for w in workers.values()))
    if not workers:
        raise ClusterctlError("the cluster has no workers to measure", "start some: `clusterctl up` or `add-worker`")
    plain = [address for address, w in workers.items() if not w.get("resources")] or list(workers)

    def batch(function: Callable[..., Any], args: list[Any]) -> float:
        started = time.perf_counter()
        futures = client.map(function, args, pure=False, workers=plain)
        figures.keys.update(future.key for future in futures)
        wait(futures)
        elapsed = time.perf_counter() - started
        client.cancel(futures)
        return elapsed

    step(f"per-task overhead: {settings.tasks} no-op tasks, {settings.repeats} times")
    batch(int, list(range(min(100, settings.tasks))))  # warm-up: imports and connections
    elapsed = _median_of(settings.repeats, lambda: batch(int, list(range(settings.tasks))))
    figures.overhead_ms = elapsed / settings.tasks * 1000
    step(f"throughput: {settings.tasks} tasks of {BUSY_TASK_SECONDS * 1000:g} ms on {figures.threads} thread(s)")
    threads = sum(workers[a]["nthreads"] for a in plain)
    busy = _median_of(settings.repeats, lambda: batch(time.sleep, [BUSY_TASK_SECONDS] * settings.tasks))
    figures.throughput = settings.tasks / busy
    figures.ideal_throughput = threads / BUSY_TASK_SECONDS
    _transfer(client, workers, settings, figures, step)
    return figures


def _transfer(client: Any, workers: dict[str, Any], settings: BenchSettings, figures: Figures,
              step: Callable[[str], None]) -> None:
    from distributed import wait

    by_host: dict[str, str] = {}
    for address, worker in workers.items():
        by_host.setdefault(worker.get("host", address), address)
    if len(workers) < 2:
        figures.transfer = "one worker only: nothing to move"
        return
    if len(by_host) >= 2:
        source, target = list(by_host.values())[:2]
    else:
        source, target = list(workers)[:2]
        figures.notes.append("every worker is on one host: the transfer stays on that host")
    size = settings.transfer_mb * 1024 * 1024
    figures.transfer = f"{workers[source].get('name', source)} -> {workers[target].get('name', target)}"

    def once() -> float:
        data = client.submit(os.urandom, size, workers=[source], pure=False, allow_other_workers=False)
        figures.keys.add(data.key)
        wait(data)
        started = time.perf_counter()
        moved = client.submit(len, data, workers=[target], pure=False, allow_other_workers=False)
        figures.keys.add(moved.key)
        wait(moved)
        elapsed = time.perf_counter() - started
        client.cancel([data, moved])
        return elapsed

    step(f"transfer: {settings.transfer_mb} MB between two workers")
    figures.bandwidth_mb_s = settings.transfer_mb / _median_of(settings.repeats, once)


def on_cluster(address: str, tls: TlsFiles | None, settings: BenchSettings, step: Callable[[str], None]) -> Figures:
    from distributed import Client

    from clusterctl.scheduler_api import client_security

    try:
        client = Client(address, security=client_security(tls), timeout=10, set_as_default=False)
    except OSError as exc:
        raise SchedulerUnreachableError(f"scheduler at {address} does not answer: {exc}",
                                        "run `clusterctl status` or `clusterctl up`") from None
    with client, client.as_current():
        figures = measure(client, settings, step)
        _assert_clean(client, figures)
    return figures


def on_local_cluster(workers: int, settings: BenchSettings, step: Callable[[str], None]) -> Figures:
    """The baseline: a LocalCluster in this process, ``workers`` processes of one thread."""
    from distributed import Client, LocalCluster

    step(f"baseline: a LocalCluster of {workers} worker process(es)")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client, \
            client.as_current():
        figures = measure(client, settings, step)
        _assert_clean(client, figures)
    return figures


def _assert_clean(client: Any, figures: Figures) -> None:
    """Every key this run made is released: the cluster holds none of them afterwards."""
    deadline = time.monotonic() + 10
    left: list[str] = []
    while time.monotonic() < deadline:
        left = [key for keys in client.has_what().values() for key in keys if key in figures.keys]
        if not left:
            return
        time.sleep(0.1)
    figures.notes.append(f"{len(left)} key(s) of the run were still held after 10 s")
