"""Talking to a running scheduler: its view of the cluster, readiness, retire and close.

The only module that imports distributed (lazily, so `clusterctl --help` stays fast). Readiness
is decided by asking the scheduler which workers it has, never by reading log lines.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterctl.errors import ForeignSchedulerError, SchedulerUnreachableError
from clusterctl.tls import TlsFiles

QUERY_TIMEOUT = 5.0
# What asking a scheduler that does not answer raises. ValueError: tornado's "cannot convert to SSL" when
# something else answers on the port; struct.error: distributed's framing when a plain-text server does.
NO_ANSWER = (OSError, asyncio.TimeoutError, ValueError, struct.error)


@dataclass(frozen=True)
class WorkerView:
    name: str
    address: str
    host: str
    nthreads: int
    memory_limit: int
    resources: dict[str, float]
    memory: int | None = None  # bytes in use by the process
    processing: int = 0  # tasks assigned to it, running or queued
    in_memory: int = 0  # results it holds


@dataclass(frozen=True)
class WaitingOnResources:
    """Tasks that need resources (e.g. ``{"GPU": 3.0}``) that no live worker offers."""

    resources: dict[str, float]
    tasks: int


@dataclass(frozen=True)
class TaskCounts:
    """The scheduler's tasks by state; ``unsatisfied``: tasks that wait on resources no worker offers."""

    waiting: int = 0  # not yet running: waiting on dependencies, queued, or no worker fits
    processing: int = 0
    in_memory: int = 0
    erred: int = 0
    unsatisfied: list[WaitingOnResources] = field(default_factory=list)


@dataclass(frozen=True)
class SchedulerView:
    dashboard_port: int | None
    started: float | None
    workers: list[WorkerView] = field(default_factory=list)
    scheduler_id: str = ""  # the id it answers with: `clusterctl:<cluster>:<token>` for ours
    tasks: TaskCounts | None = None  # only from ``query(..., tasks=True)``

    def names(self) -> set[str]:
        return {w.name for w in self.workers}


def _worker_view(address: str, info: dict[str, Any], processing: int) -> WorkerView:
    metrics = info.get("metrics") or {}
    counts = metrics.get("task_counts") or {}
    return WorkerView(
        name=str(info.get("name", address)),
        address=address,
        host=str(info.get("host", "")),
        nthreads=int(info.get("nthreads", 0)),
        memory_limit=int(info.get("memory_limit") or 0),
        resources={k: float(v) for k, v in (info.get("resources") or {}).items()},
        memory=metrics.get("memory"),
        processing=processing,
        in_memory=int(counts.get("memory", 0)),
    )


def client_security(files: TlsFiles | None) -> Any:
    """A ``distributed.Security`` for a client with these files, or None without TLS."""
    if files is None:
        return None
    from distributed.security import Security

    return Security(tls_ca_file=files.ca_file, tls_client_cert=files.cert, tls_client_key=files.key,
                    require_encryption=True)


def connection_args(files: TlsFiles | None) -> dict:
    """What distributed's comm layer needs to connect as a client (empty without TLS)."""
    security = client_security(files)
    return {} if security is None else security.get_connection_args("client")


def owner_of(scheduler_id: str) -> str:
    """Whose scheduler an id names, in words: ``cluster 'local'`` or ``not clusterctl's``."""
    parts = scheduler_id.split(":")
    if len(parts) == 3 and parts[0] == "clusterctl":
        return f"cluster {parts[1]!r}"
    return "a Dask scheduler that clusterctl did not start"


def check_identity(identity: dict[str, Any], expect: str | None, address: str) -> None:
    """Raise ``ForeignSchedulerError`` unless the scheduler's id starts with ``expect`` (None: trust)."""
    found = str(identity.get("id", ""))
    if expect is not None and not found.startswith(expect):
        raise ForeignSchedulerError(
            f"the scheduler at {address} is not this cluster's: it is {owner_of(found)}'s; clusterctl will "
            "not use, retire or close it",
            "another cluster uses this address: choose another `scheduler.port` in the inventory")


def _scheduler_snapshot() -> Callable[..., dict[str, Any]]:
    """The function the scheduler runs for ``query(tasks=True)``: identity, load and tasks at once.

    Defined inside a function so that cloudpickle sends its code by value: the scheduler's host
    needs distributed, not clusterctl. It reads the scheduler's state only through attributes that
    have long been there, each one guarded, so another distributed version answers what it can.
    """

    def clusterctl_status(dask_scheduler: Any) -> dict[str, Any]:
        identity = dask_scheduler.identity()
        workers = dict(getattr(dask_scheduler, "workers", {}))
        processing = {addr: len(getattr(ws, "processing", ())) for addr, ws in workers.items()}
        counts: dict[str, int] = {}
        prefixes = getattr(dask_scheduler, "task_prefixes", None)
        if prefixes is not None:
            for prefix in prefixes.values():
                for state_name, number in dict(getattr(prefix, "states", {})).items():
                    counts[state_name] = counts.get(state_name, 0) + int(number)
        else:
            for task in getattr(dask_scheduler, "tasks", {}).values():
                counts[task.state] = counts.get(task.state, 0) + 1
        offered = [dict(getattr(ws, "resources", {}) or {}) for ws in workers.values()]
        needs: dict[tuple[tuple[str, float], ...], int] = {}
        for task in list(getattr(dask_scheduler, "unrunnable", ())):
            need = dict(getattr(task, "resource_restrictions", None) or {})
            if need and not any(all(has.get(k, 0) >= v for k, v in need.items()) for has in offered):
                key = tuple(sorted((str(k), float(v)) for k, v in need.items()))
                needs[key] = needs.get(key, 0) + 1
        return {"identity": identity, "processing": processing, "states": counts,
                "unsatisfied": [[list(map(list, key)), number] for key, number in needs.items()]}

    return clusterctl_status


def _task_counts(answer: dict[str, Any]) -> TaskCounts:
    states = answer.get("states") or {}
    return TaskCounts(
        waiting=sum(int(states.get(s, 0)) for s in ("waiting", "queued", "no-worker")),
        processing=int(states.get("processing", 0)),
        in_memory=int(states.get("memory", 0)),
        erred=int(states.get("erred", 0)),
        unsatisfied=sorted((WaitingOnResources({str(k): float(v) for k, v in need}, int(number))
                            for need, number in answer.get("unsatisfied") or ()), key=lambda w: -w.tasks),
    )


async def _query(address: str, timeout: float, comm_args: dict[str, Any], expect: str | None = None,
                 tasks: bool = False) -> SchedulerView:
    from distributed.core import rpc

    async with rpc(address, timeout=timeout, connection_args=comm_args) as scheduler:
        return await _view(scheduler, address, expect, tasks)


async def _view(scheduler: Any, address: str, expect: str | None = None, tasks: bool = False) -> SchedulerView:
    """The scheduler's view, asked on ``scheduler`` (an open ``rpc``)."""
    counts: TaskCounts | None = None
    answer = await _snapshot(scheduler) if tasks else None
    if answer is not None:
        identity, processing = answer["identity"], answer["processing"]
        counts = _task_counts(answer)
    else:
        identity = await scheduler.identity()
        processing = {addr: len(keys) for addr, keys in (await scheduler.processing()).items()}
    check_identity(identity, expect, address)
    services = identity.get("services") or {}
    workers = [
        _worker_view(addr, info, int(processing.get(addr, 0)))
        for addr, info in sorted((identity.get("workers") or {}).items(), key=lambda kv: str(kv[1].get("name")))
    ]
    return SchedulerView(services.get("dashboard"), identity.get("started"), workers,
                         scheduler_id=str(identity.get("id", "")), tasks=counts)


async def _snapshot(scheduler: Any) -> dict[str, Any] | None:
    """One round trip for identity, load and tasks; None if this scheduler cannot run it."""
    import cloudpickle  # type: ignore[import-untyped]

    try:
        answer = await scheduler.run_function(function=cloudpickle.dumps(_scheduler_snapshot()))
    except (OSError, asyncio.TimeoutError):
        raise
    except Exception:  # noqa: BLE001 - e.g. another python that cannot load the function: ask plainly
        return None
    if not isinstance(answer, dict) or answer.get("status") != "OK":
        return None
    return answer.get("result")


def _run(coroutine_factory: Callable[[], Any], address: str, timeout: float) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coroutine_factory(), timeout + 1))
    except NO_ANSWER as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SchedulerUnreachableError(
            f"scheduler at {address} does not answer: {reason}",
            "run `clusterctl status --processes` or `clusterctl up` to restart it",
        ) from None


def query(address: str, timeout: float = QUERY_TIMEOUT, tls: TlsFiles | None = None,
          expect: str | None = None, tasks: bool = False) -> SchedulerView:
    """The scheduler's own view; ``SchedulerUnreachableError`` if it does not answer,
    ``ForeignSchedulerError`` if its id does not start with ``expect``.

    With ``tasks``, one call that the scheduler answers with its workers, their load and its
    tasks by state (what `status` shows). Without, the two light calls that polling uses: they
    leave no line in the scheduler's log.
    """
    return _run(lambda: _query(address, timeout, connection_args(tls), expect, tasks), address, timeout)


def wait_for_workers(
    address: str,
    names: set[str],
    timeout: float,
    on_poll: Callable[[SchedulerView | None], None],
    tls: TlsFiles | None = None,
    poll_interval: float = 0.1,
    expect: str | None = None,
) -> SchedulerView | None:
    """Poll until the scheduler answers and reports every name in ``names``.

    ``on_poll`` sees each answer (None while the scheduler does not answer yet) and may raise to
    stop early, e.g. when a process it watches has died. Returns the last view, complete or not.
    One connection serves every poll (made again if it breaks), so a poll costs the scheduler two
    light calls and this process no new connection: it can come every ``poll_interval`` seconds.
    """
    deadline = time.monotonic() + timeout
    return asyncio.run(_wait(address, names, deadline, on_poll, connection_args(tls), poll_interval, expect))


async def _wait(address: str, names: set[str], deadline: float, on_poll: Callable[[SchedulerView | None], None],
                comm_args: dict[str, Any], poll_interval: float, expect: str | None) -> SchedulerView | None:
    from distributed.core import rpc

    view: SchedulerView | None = None
    async with rpc(address, timeout=QUERY_TIMEOUT, connection_args=comm_args) as scheduler:
        while True:
            left = max(1.0, min(QUERY_TIMEOUT, deadline - time.monotonic()))
            try:
                view = await asyncio.wait_for(_view(scheduler, address, expect), left + 1)
            except NO_ANSWER:
                view = None  # not listening yet (or not answering): asked again at the next poll
            on_poll(view)
            if view is not None and names <= view.names():
                return view
            if time.monotonic() >= deadline:
                return view
            await asyncio.sleep(poll_interval)


async def _close(address: str, connect_timeout: float, comm_args: dict[str, Any], expect: str | None) -> None:
    from distributed.core import rpc

    async with rpc(address, timeout=connect_timeout, connection_args=comm_args) as scheduler:
        check_identity(await scheduler.identity(), expect, address)  # on the connection that closes it
        try:
            # The scheduler tells each worker to close (and its nanny with it), then stops: what
            # `SSHCluster.close()` does. No retiring: every worker goes, there is nowhere to move data to.
            await scheduler.terminate()
        except OSError:
            pass  # the scheduler closes the connection as it goes: that is the answer we want


def close(address: str, expect: str | None, timeout: float = 15.0, tls: TlsFiles | None = None,
          connect_timeout: float = 2.0) -> None:
    """Ask the scheduler to close itself and its workers, once it proved to be ``expect``.

    A scheduler that does not answer within ``connect_timeout`` is reported at once (the processes
    are stopped by pid anyway); one that answers has ``timeout`` to close.
    """
    _run(lambda: _close(address, connect_timeout, connection_args(tls), expect), address, timeout)


async def _retire(address: str, workers: list[str], timeout: float, comm_args: dict[str, Any],
                  expect: str | None) -> dict:
    from distributed.core import rpc

    async with rpc(address, timeout=timeout, connection_args=comm_args) as scheduler:
        check_identity(await scheduler.identity(), expect, address)
        return await scheduler.retire_workers(names=workers, close_workers=True, remove=True)


def retire(address: str, names: list[str], expect: str | None, timeout: float = 30.0,
           tls: TlsFiles | None = None) -> dict:
    """Retire the named workers gracefully (their data moves to other workers first), once the
    scheduler proved to be ``expect``."""
    return _run(lambda: _retire(address, names, timeout, connection_args(tls), expect), address, timeout)
