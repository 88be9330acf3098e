"""`clusterctl status`: the scheduler's own view, mapped onto the inventory; optionally the pids."""

from __future__ import annotations

import time
from collections.abc import Iterator

from clusterctl import scheduler_api, state
from clusterctl.errors import ClusterctlError, ForeignSchedulerError, SchedulerUnreachableError
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.records import ProcessRecord
from clusterctl.report import ClusterReport, ProcessRow, build_report
from clusterctl.state import ClusterState


def status(cluster: str | None = None, config: str | None = None, processes: bool = False,
           limit: list[str] | None = None) -> ClusterReport:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running (no state in {state.cluster_dir(name)})",
                              "start it with `clusterctl up CONFIG`")
    chosen = limit_hosts(st.inventory, cluster_hosts(st.inventory, [r.host for r in st.processes]), limit or [])
    try:
        report = build_report(st, scheduler_api.query(st.scheduler_address, tls=st.client_tls(), tasks=True,
                                                      expect=st.expected_scheduler_id()))
    except (SchedulerUnreachableError, ForeignSchedulerError) as exc:  # another cluster's is not our view
        report = build_report(st, None, error=_idle_exit(st) or exc.message)
    if limit:
        _only(report, st, chosen)
    if processes:
        report.processes = check_processes(st, [r for r in st.processes if r.host in chosen])
    return report


def _only(report: ClusterReport, st: ClusterState, chosen: list[str]) -> None:
    """Keep in ``report`` the workers (expected, extra or missing) on the hosts ``chosen``."""
    addresses = {st.inventory.host(alias).address for alias in chosen if alias in st.inventory.hosts}
    on = {row.name for row in report.workers if row.host in chosen or row.host in addresses}
    report.workers = [row for row in report.workers if row.name in on]
    report.missing = [name for name in report.missing if name in on]
    report.extra = [name for name in report.extra if name in on]


def _idle_exit(st: ClusterState) -> str | None:
    """Why the scheduler is gone when it has `idle_timeout` and its process has exited: it shut itself down."""
    idle = st.inventory.scheduler.idle_timeout
    record = st.process("scheduler")
    if idle is None or record is None:
        return None
    from clusterctl.group import connect  # SSH only when asked: `status` alone talks to the scheduler

    try:
        with connect(st.inventory, [record.host]) as hosts:
            if hosts[record.host].alive([record]).get(record.pid, True):
                return None
    except ClusterctlError:
        return None
    return (f"its process has exited: the scheduler shuts itself down after idle_timeout ({idle}) without work; "
            "`clusterctl up CONFIG` starts the cluster again, `clusterctl down` cleans up what is left")


def check_processes(st: ClusterState, records: list[ProcessRecord] | None = None) -> list[ProcessRow]:
    """Every recorded pid (or those of ``records``), asked on its host: alive, dead, or the host could not be asked."""
    from clusterctl.group import connect

    records = st.processes if records is None else records
    with connect(st.inventory, [r.host for r in records]) as hosts:
        results = hosts.run_each(records, lambda host, mine: host.alive(mine))
    rows: list[ProcessRow] = []
    for record in records:
        result = results[record.host]
        alive = result.value.get(record.pid) if result.value is not None else None
        rows.append(ProcessRow(record.role, record.name, record.host, record.pid, alive, record.log,
                               note=str(result.error) if result.error else ""))
    return rows


def watch(cluster: str | None = None, config: str | None = None, processes: bool = False,
          interval: float = 2.0, limit: list[str] | None = None) -> Iterator[ClusterReport]:
    """A fresh report every ``interval`` seconds, until the caller stops iterating (Ctrl-C)."""
    while True:
        started = time.monotonic()
        yield status(cluster, config, processes, limit)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
