"""The cluster as the scheduler sees it, mapped onto what clusterctl recorded, and its JSON document.

`up`, `status` and `add-worker` all answer with a ``ClusterReport``; ``render`` shows it as a
table or prints ``report_document`` for `--json`.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterctl import supervisor
from clusterctl.errors import EXIT_FAILED, EXIT_OK, EXIT_SCHEDULER_DOWN
from clusterctl.inventory import format_resources
from clusterctl.records import ProcessRecord
from clusterctl.scheduler_api import SchedulerView, TaskCounts
from clusterctl.state import ClusterState

JSON_SCHEMA_VERSION = 1


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
    group: str | None = None  # the inventory's worker group (None: not started by clusterctl)
    gpu: dict[str, Any] | None = None  # a per-GPU worker's GPU: index, uuid, name, memory_mib


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
class AdaptiveRow:
    """The cluster's `clusterctl adapt` supervisor, as recorded, and whether it still runs."""

    pid: int
    alive: bool
    minimum: int
    maximum: int | None
    interval: float
    log: str | None


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
    tasks: TaskCounts | None = None  # the scheduler's tasks by state, when asked (`status`)
    adaptive: AdaptiveRow | None = None  # a `clusterctl adapt` supervisor is recorded
    environment: dict[str, Any] | None = None  # `up` with `environment: {sync: true}`: what syncing did

    @property
    def healthy(self) -> bool:
        return self.scheduler_answers and not self.missing

    @property
    def exit_code(self) -> int:
        """0 every expected worker is present, 1 degraded, 3 the scheduler does not answer."""
        if not self.scheduler_answers:
            return EXIT_SCHEDULER_DOWN
        return EXIT_OK if self.healthy else EXIT_FAILED

    @property
    def scheduler_uptime(self) -> float | None:
        """Seconds since the scheduler started (by this machine's clock; never negative)."""
        return None if self.scheduler_started is None else max(0.0, time.time() - self.scheduler_started)


def add_worker_command(resources: dict[str, float]) -> str:
    """The command that adds a worker offering ``resources``: what tasks waiting on them need."""
    return f"clusterctl add-worker --resources {shlex.quote(format_resources(resources))}"


def _dashboard_note(st: ClusterState) -> str | None:
    scheduler = st.inventory.scheduler
    if scheduler.dashboard_address is None:
        return "off"
    if scheduler.dashboard == "local":
        return f"loopback only on {scheduler.host}: run `clusterctl dashboard`"
    return None


def dashboard_url(view: SchedulerView | None, scheduler_host: str) -> str | None:
    if view is None or view.dashboard_port is None:
        return None
    host = f"[{scheduler_host}]" if ":" in scheduler_host else scheduler_host
    return f"http://{host}:{view.dashboard_port}/status"


def build_report(st: ClusterState, view: SchedulerView | None, error: str | None = None) -> ClusterReport:
    expected = st.expected_workers()
    inventory_names = {w for p in st.processes if p.role == "worker" and not p.added for w in p.worker_names}
    seen = {w.name: w for w in view.workers} if view else {}
    records = {w: p for p in st.processes if p.role == "worker" for w in p.worker_names}
    rows = []
    for worker in (view.workers if view else []):
        record = records.get(worker.name)
        rows.append(WorkerRow(
            name=worker.name, host=expected.get(worker.name, worker.host), address=worker.address,
            nthreads=worker.nthreads, memory_limit=worker.memory_limit, resources=worker.resources,
            memory=worker.memory, processing=worker.processing, in_memory=worker.in_memory,
            state="running" if worker.name in inventory_names else "extra",
            group=_group_of(record), gpu=record.gpu if record else None,
        ))
    missing = [name for name in expected if name not in seen] if view else list(expected)
    for name in missing:
        rows.append(WorkerRow(name=name, host=expected[name], address=None, nthreads=None, memory_limit=None,
                              resources={}, state="missing", group=_group_of(records.get(name)),
                              gpu=records[name].gpu if name in records else None))
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
        tasks=view.tasks if view else None,
        adaptive=_adaptive(st),
    )


def _group_of(record: ProcessRecord | None) -> str | None:
    if record is None:
        return None
    return record.group or record.name  # recorded before groups were kept: a group was one process


def _adaptive(st: ClusterState) -> AdaptiveRow | None:
    record = st.supervisor
    if record is None:
        return None
    return AdaptiveRow(record.pid, supervisor.alive(record), record.minimum, record.maximum, record.interval, record.log)


def report_document(report: ClusterReport) -> dict[str, Any]:
    """The stable `status --json` document (documented in README.md)."""
    document: dict[str, Any] = {
        "schema": JSON_SCHEMA_VERSION,
        "cluster": report.cluster,
        "healthy": report.healthy,
        "scheduler": {
            "address": report.scheduler_address,
            "dashboard": report.dashboard,
            "dashboard_note": report.dashboard_note,
            "answers": report.scheduler_answers,
            "error": report.scheduler_error,
            "started": report.scheduler_started,
            "uptime_seconds": None if report.scheduler_uptime is None else round(report.scheduler_uptime, 1),
        },
        "workers": [_worker_document(w) for w in report.workers if w.state != "missing"],
        "missing": report.missing,
        "extra": report.extra,
        "tasks": None if report.tasks is None else {
            "waiting": report.tasks.waiting, "processing": report.tasks.processing,
            "in_memory": report.tasks.in_memory, "erred": report.tasks.erred},
        "waiting_on_resources": [] if report.tasks is None else [
            {"tasks": w.tasks, "resources": w.resources, "command": add_worker_command(w.resources)}
            for w in report.tasks.unsatisfied],
        "adaptive": asdict(report.adaptive) if report.adaptive else None,
    }
    if report.started:
        document["started"] = report.started
    if report.warnings:
        document["warnings"] = report.warnings
    if report.environment is not None:
        document["environment"] = report.environment
    if report.processes is not None:
        document["processes"] = [asdict(p) for p in report.processes]
    return document


def _worker_document(worker: WorkerRow) -> dict[str, Any]:
    return {
        "name": worker.name,
        "host": worker.host,
        "group": worker.group,
        "gpu": worker.gpu,
        "address": worker.address,
        "nthreads": worker.nthreads,
        "memory_limit": worker.memory_limit,
        "memory": worker.memory,
        "resources": worker.resources,
        "processing": worker.processing,
        "in_memory": worker.in_memory,
        "extra": worker.state == "extra",
    }
