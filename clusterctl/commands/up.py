"""`clusterctl up CONFIG`: start the scheduler and every worker group, wait until all register."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterctl import state
from clusterctl.commands._common import (
    ClusterReport,
    Progress,
    build_report,
    dashboard_url,
    find_dead,
    start_processes,
    stop_records,
    wait_until_ready,
)
from clusterctl.commands.preflight import preflight
from clusterctl.hosts import Host, connect
from clusterctl.inventory import Inventory, load_inventory
from clusterctl.launch import ProcessPlan, plan_cluster, scheduler_address
from clusterctl.state import ClusterState, ProcessRecord

DEFAULT_TIMEOUT = 60.0
STOP_GRACE = 5.0


@dataclass
class DryRun:
    cluster: str
    scheduler_address: str
    commands: dict[str, list[str]] = field(default_factory=dict)  # host -> shell-equivalent lines


def up(config: str, progress: Progress, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False,
       allow_version_mismatch: bool = False) -> ClusterReport | DryRun:
    inventory = load_inventory(config)
    aliases = [inventory.scheduler.host] + [group.host for group in inventory.workers]
    with state.locked(inventory.name), connect(inventory, aliases) as hosts:
        scheduler_host = hosts[inventory.scheduler.host]
        listen_host = _listen_host(inventory, hosts)
        plans = plan_cluster(inventory, listen_host)
        if dry_run:
            return _dry_run(inventory, hosts, plans, listen_host)
        progress.step(f"checking {len(hosts)} host(s)")
        report = preflight(hosts, scheduler_host.alias, allow_version_mismatch)
        return _start(inventory, config, hosts, plans, listen_host, report.versions.get(scheduler_host.alias, {}),
                      timeout, progress)


def _listen_host(inventory: Inventory, hosts: dict[str, Host]) -> str:
    """Where the scheduler listens: its host's address, loopback when every host is this machine."""
    if all(host.settings.connection == "local" for host in hosts.values()):
        return inventory.host(inventory.scheduler.host).address or "127.0.0.1"
    return hosts[inventory.scheduler.host].address


def _dry_run(inventory: Inventory, hosts: dict[str, Host], plans: list[ProcessPlan], listen_host: str) -> DryRun:
    result = DryRun(inventory.name, scheduler_address(listen_host, inventory.scheduler.port))
    for plan in plans:
        result.commands.setdefault(plan.host, []).extend(hosts[plan.host].describe_start([plan]))
    return result


def _start(inventory: Inventory, config: str, hosts: dict[str, Host], plans: list[ProcessPlan], listen_host: str,
           versions: dict, timeout: float, progress: Progress) -> ClusterReport:
    address = scheduler_address(listen_host, inventory.scheduler.port)
    previous = state.load(inventory.name)
    st = ClusterState(
        name=inventory.name,
        inventory=inventory.model_dump(mode="json", by_alias=False),
        config_path=str(Path(config).resolve()),
        scheduler_address=address,
        dashboard_url=None,
        versions=versions,
    )
    if previous is not None:
        # Running `up` again starts only what is not running; nothing twice.
        dead = find_dead(hosts, [r for r in previous.processes if r.host in hosts]) if previous.processes else []
        st.processes = [r for r in previous.processes if r not in dead]
        if previous.scheduler_address != address and st.process("scheduler") is not None:
            st.scheduler_address = previous.scheduler_address
    running = {r.name for r in st.processes}
    missing = [plan for plan in plans if plan.name not in running]
    started: list[ProcessRecord] = []

    def record(records: list[ProcessRecord]) -> None:
        started.extend(records)
        st.processes.extend(records)
        state.save(st)
        state.set_current(st.name)

    try:
        if missing:
            start_processes(hosts, missing, progress, on_started=record)
        else:
            state.save(st)
            state.set_current(st.name)
        names = [name for r in st.processes if r.role == "worker" for name in r.worker_names]
        progress.step(f"waiting for the scheduler and {len(names)} worker(s)")
        view = wait_until_ready(st, hosts, started, names, timeout, progress)
    except BaseException:
        _undo(st, hosts, started, progress)
        raise
    finally:
        progress.done()
    st.dashboard_url = dashboard_url(view, hosts[inventory.scheduler.host].address if listen_host != "127.0.0.1"
                                     else listen_host)
    state.save(st)
    report = build_report(st, view)
    report.started = [r.name for r in started]
    report.headline = (f"started {len(started)} process(es)" if started
                       else "already running: nothing to start")
    return report


def _undo(st: ClusterState, hosts: dict[str, Host], started: list[ProcessRecord], progress: Progress) -> None:
    """A failed `up` stops what it started, so nothing is left half-started."""
    if not started:
        return
    progress.step(f"stopping the {len(started)} process(es) this attempt started")
    outcomes = stop_records(hosts, started, STOP_GRACE)
    gone_pids = {(o.host, pid) for o in outcomes if o.succeeded for pid, gone in o.value.items() if gone}  # type: ignore[union-attr]
    st.processes = [r for r in st.processes if (r.host, r.pid) not in gone_pids]
    if st.processes:
        state.save(st)
    else:
        state.remove(st.name)
