"""Pieces the commands share: the progress interface, reports, and the start-and-wait path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterctl import scheduler_api, state
from clusterctl.errors import ClusterctlError, HostOutcome
from clusterctl.fanout import fan_out, values_or_raise
from clusterctl.hosts import Host
from clusterctl.launch import ProcessPlan
from clusterctl.scheduler_api import SchedulerView
from clusterctl.state import ClusterState, ProcessRecord

UNDO_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a failed start is undone
LOG_TAIL_LINES = 15  # shown to the user
LOG_SCAN_LINES = 200  # searched for the root cause
LIVENESS_CHECK_EVERY = 1.0  # seconds between pid checks while waiting for workers


class Progress(Protocol):
    """How a long command tells the user where it is. ``render`` provides the implementations."""

    def step(self, message: str) -> None: ...

    def waiting(self, ready: list[str], expected: list[str]) -> None: ...

    def done(self) -> None: ...

    def password(self, host: str) -> str:
        """Ask the user for ``host``'s SSH password (only called on a terminal)."""
        ...


class SilentProgress:
    def step(self, message: str) -> None:
        pass

    def waiting(self, ready: list[str], expected: list[str]) -> None:
        pass

    def done(self) -> None:
        pass

    def password(self, host: str) -> str:
        raise ClusterctlError(f"{host}: a password is needed", "set CLUSTERCTL_SSH_PASSWORD or use a key")


@dataclass
class WorkerRow:
    name: str
    host: str
    address: str | None
    nthreads: int | None
    memory_limit: int | None
    resources: dict[str, float]
    memory: int | None = None
    processing: int = 0
    in_memory: int = 0
    state: str = "running"  # running | missing | extra


@dataclass
class ProcessRow:
    role: str
    name: str
    host: str
    pid: int
    alive: bool | None  # None: the host could not be asked
    log: str
    note: str = ""


@dataclass
class ClusterReport:
    """What `up`, `status` and `add-worker` show: the scheduler's view mapped onto the inventory."""

    cluster: str
    scheduler_address: str
    dashboard: str | None
    scheduler_answers: bool
    workers: list[WorkerRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    processes: list[ProcessRow] | None = None
    scheduler_error: str | None = None
    started: list[str] = field(default_factory=list)  # processes this command started
    headline: str = ""
    warnings: list[str] = field(default_factory=list)
    dashboard_note: str | None = None  # why there is no URL: off, or loopback only
    scheduler_started: float | None = None  # unix time, from the scheduler's identity

    @property
    def healthy(self) -> bool:
        return self.scheduler_answers and not self.missing

    @property
    def scheduler_uptime(self) -> float | None:
        """Seconds since the scheduler started (by this machine's clock; never negative)."""
        import time

        return None if self.scheduler_started is None else max(0.0, time.time() - self.scheduler_started)


def _dashboard_note(st: ClusterState) -> str | None:
    scheduler = st.model().scheduler
    if scheduler.dashboard_address is None:
        return "off"
    if scheduler.dashboard == "local":
        return f"loopback only on {scheduler.host}: run `clusterctl dashboard`"
    return None


def dashboard_url(view: SchedulerView | None, scheduler_host_address: str) -> str | None:
    if view is None or view.dashboard_port is None:
        return None
    host = f"[{scheduler_host_address}]" if ":" in scheduler_host_address else scheduler_host_address
    return f"http://{host}:{view.dashboard_port}/status"


def build_report(st: ClusterState, view: SchedulerView | None, error: str | None = None) -> ClusterReport:
    expected = st.expected_workers()
    inventory_names = {w for p in st.processes if p.role == "worker" and not p.added for w in p.worker_names}
    seen = {w.name: w for w in view.workers} if view else {}
    rows = []
    for worker in (view.workers if view else []):
        rows.append(WorkerRow(
            name=worker.name, host=expected.get(worker.name, worker.host), address=worker.address,
            nthreads=worker.nthreads, memory_limit=worker.memory_limit, resources=worker.resources,
            memory=worker.memory, processing=worker.processing, in_memory=worker.in_memory,
            state="running" if worker.name in inventory_names else "extra",
        ))
    missing = [name for name in expected if name not in seen] if view else list(expected)
    for name in missing:
        rows.append(WorkerRow(name=name, host=expected[name], address=None, nthreads=None, memory_limit=None,
                              resources={}, state="missing"))
    return ClusterReport(
        cluster=st.name,
        scheduler_address=st.scheduler_address,
        dashboard=st.dashboard_url,
        dashboard_note=_dashboard_note(st),
        scheduler_answers=view is not None,
        workers=rows,
        missing=missing,
        extra=[w.name for w in rows if w.state == "extra"],
        scheduler_error=error,
        scheduler_started=view.started if view else None,
    )


def start_processes(hosts: dict[str, Host], plans: list[ProcessPlan], progress: Progress,
                    on_started: Callable[[list[ProcessRecord]], None],
                    added: dict[str, dict[str, Any]] | None = None) -> list[ProcessRecord]:
    """Start every plan on its host, all hosts at once.

    ``added`` maps the names of groups that `add-worker` added (not the inventory) to their
    settings, so that `up` can start them again.

    Whatever did start is handed to ``on_started`` (to be recorded) before any failure is
    raised, so that nothing started becomes unreachable to `down`.
    """
    by_host: dict[str, list[ProcessPlan]] = {}
    for plan in plans:
        by_host.setdefault(plan.host, []).append(plan)
    progress.step(f"starting {len(plans)} process(es) on {len(by_host)} host(s)")
    outcomes = fan_out(by_host, lambda h: hosts[h].start(by_host[h]))
    by_name = {plan.name: plan for plan in plans}
    records: list[ProcessRecord] = []
    failures: list[str] = []
    for outcome in outcomes:
        for answer in outcome.value if outcome.succeeded else []:  # type: ignore[union-attr]
            plan = by_name[answer["name"]]
            if "error" in answer:
                failures.append(f"{outcome.host}: {plan.role} {plan.name}: {answer['error']}")
                continue
            records.append(ProcessRecord(
                role=plan.role, name=plan.name, host=outcome.host, pid=answer["pid"],
                start_time=answer.get("start_time"), log=answer["log"], worker_names=plan.worker_names,
                added=plan.name in (added or {}), spec=(added or {}).get(plan.name, {}), argv=plan.argv,
            ))
    on_started(records)
    values_or_raise("start", outcomes)
    if failures:
        raise ClusterctlError("; ".join(failures), "set `python:` for that host to an interpreter that exists")
    return records


def start_and_wait(st: ClusterState, hosts: dict[str, Host], plans: list[ProcessPlan], names: list[str],
                   timeout: float, progress: Progress,
                   added: dict[str, dict[str, Any]] | None = None) -> tuple[SchedulerView, list[ProcessRecord]]:
    """Start ``plans`` and wait until the scheduler reports every worker in ``names``.

    Each process is recorded in the state as soon as its pid is known. On any failure or
    interrupt, what this call started is stopped again before the error goes up.
    """
    started: list[ProcessRecord] = []

    def record(records: list[ProcessRecord]) -> None:
        started.extend(records)
        st.processes.extend(records)
        state.save(st)

    try:
        if plans:
            start_processes(hosts, plans, progress, on_started=record, added=added)
        progress.step(f"waiting for the scheduler and {len(names)} worker(s)")
        view = wait_until_ready(st, hosts, started, names, timeout, progress)
    except BaseException:
        undo_start(st, hosts, plans, started, progress)
        raise
    finally:
        progress.done()
    return view, started


def wait_until_ready(st: ClusterState, hosts: dict[str, Host], watch: list[ProcessRecord], names: list[str],
                     timeout: float, progress: Progress) -> SchedulerView:
    """Wait until the scheduler reports every name; fail fast, with the log tail, if a process dies.

    Liveness is checked on the hosts in the background, so a slow host never delays noticing
    that the scheduler already reports every worker.
    """
    import time
    from concurrent.futures import Future, ThreadPoolExecutor

    checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liveness")
    check: list[Future[list[ProcessRecord]]] = []
    last_check = [time.monotonic()]

    def on_poll(view: SchedulerView | None) -> None:
        progress.waiting(sorted(view.names() & set(names)) if view else [], names)
        if check and check[0].done():
            dead = check.pop().result()
            if dead:
                raise start_failure(hosts, dead[0], "exited during start-up")
        if watch and not check and time.monotonic() - last_check[0] >= LIVENESS_CHECK_EVERY:
            last_check[0] = time.monotonic()
            check.append(checker.submit(find_dead, hosts, watch))

    try:
        view = scheduler_api.wait_for_workers(st.scheduler_address, set(names), timeout, on_poll, st.client_tls())
    finally:
        checker.shutdown(wait=False, cancel_futures=True)
    if view is not None and set(names) <= view.names():
        return view
    if view is None:
        scheduler = next((r for r in watch if r.role == "scheduler"), None) or st.process("scheduler")
        if scheduler is not None:
            raise start_failure(hosts, scheduler, f"did not answer at {st.scheduler_address} within {timeout:g}s")
        raise ClusterctlError(f"the scheduler at {st.scheduler_address} did not answer within {timeout:g}s",
                              "check that its host is up, or run `clusterctl up` again")
    absent = [n for n in names if n not in view.names()]
    owner = next((r for r in [*watch, *st.processes] if set(absent) & set(r.worker_names)), None)
    if owner is not None:
        raise start_failure(hosts, owner, f"did not register worker(s) {', '.join(absent)} within {timeout:g}s")
    raise ClusterctlError(f"worker(s) {', '.join(absent)} did not register within {timeout:g}s")


def find_dead(hosts: dict[str, Host], records: list[ProcessRecord]) -> list[ProcessRecord]:
    by_host: dict[str, list[ProcessRecord]] = {}
    for record in records:
        by_host.setdefault(record.host, []).append(record)
    outcomes = fan_out(by_host, lambda h: hosts[h].alive([vars(r) for r in by_host[h]]))
    dead = []
    for outcome in outcomes:
        if outcome.succeeded:
            alive = outcome.value
            assert isinstance(alive, dict)
            dead += [r for r in by_host[outcome.host] if not alive.get(r.pid, False)]
    return dead


def start_failure(hosts: dict[str, Host], record: ProcessRecord, what: str) -> ClusterctlError:
    """``<host>: worker gpu2 (pid 123) exited during start-up``, with the tail of its log."""
    try:
        tail = hosts[record.host].tail(record.log, LOG_SCAN_LINES)
    except ClusterctlError as exc:
        tail = f"(could not read {record.log}: {exc.message})"
    reason = _reason_from_log(tail)
    tail = "\n".join(tail.splitlines()[-LOG_TAIL_LINES:])
    message = f"{record.host}: {record.role} {record.name} (pid {record.pid}) {what}"
    if reason:
        message += f": {reason}"
    return ClusterctlError(message, f"full log: {record.log} on {record.host}",
                           details=f"last lines of {record.log}:\n{tail}" if tail else None)


# Root causes that dask logs well above its final "failed to start" line.
ROOT_CAUSES = ("Address already in use", "No module named", "Permission denied", "Cannot assign requested address",
               "command not found", "No such file or directory", "certificate verify failed")


def _reason_from_log(tail: str) -> str:
    """The most telling line of a log tail: a known root cause, else the last error line."""
    lines = tail.splitlines()
    for line in reversed(lines):
        if any(cause in line for cause in ROOT_CAUSES):
            return line.strip()[:200]
    for line in reversed(lines):
        text = line.strip()
        if text and any(word in text for word in ("Error", "error:", "Exception", "No module named")):
            return text[:200]
    return ""


def stop_records(hosts: dict[str, Host], records: list[ProcessRecord], grace: float) -> list[HostOutcome]:
    """Stop processes by pid on their hosts, all hosts at once; each outcome maps pid -> gone."""
    by_host: dict[str, list[ProcessRecord]] = {}
    for record in records:
        by_host.setdefault(record.host, []).append(record)
    return fan_out(by_host, lambda h: hosts[h].stop([vars(r) for r in by_host[h]], grace))


def verified_gone(outcomes: list[HostOutcome]) -> set[tuple[str, int]]:
    """(host, pid) of every process that ``stop_records`` verified gone."""
    return {(o.host, pid) for o in outcomes if isinstance(o.value, dict) for pid, gone in o.value.items() if gone}


def undo_start(st: ClusterState, hosts: dict[str, Host], plans: list[ProcessPlan], started: list[ProcessRecord],
          progress: Progress) -> None:
    """A failed or interrupted start stops what it started, so nothing is left half-started.

    Besides the processes it recorded, it looks for pid files of the processes it meant to start:
    an interrupt can land after a host started a process but before its pid came back.
    """
    names_by_host: dict[str, set[str]] = {}
    for plan in plans:
        names_by_host.setdefault(plan.host, set()).add(plan.name)
    victims = list(started)
    known = {(r.host, r.pid) for r in started}
    for alias, names in names_by_host.items():
        try:
            listed = hosts[alias].listing()
        except Exception:  # noqa: BLE001 - best effort while already failing; `down` sweeps pid files too
            continue
        for found in listed:
            if found["name"] in names and found.get("alive") and (alias, found["pid"]) not in known:
                victims.append(ProcessRecord(role=found.get("role") or "worker", name=found["name"], host=alias,
                                             pid=found["pid"], start_time=found.get("start_time"), log=found["log"]))
    if victims:
        progress.step(f"stopping the {len(victims)} process(es) this attempt started")
        outcomes = stop_records(hosts, victims, UNDO_GRACE)
        gone_pids = verified_gone(outcomes)
        st.processes = [r for r in st.processes if (r.host, r.pid) not in gone_pids]
    if st.processes:
        state.save(st)
    else:
        state.remove(st.name)
