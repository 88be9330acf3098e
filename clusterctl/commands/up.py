"""`clusterctl up CONFIG`: make what runs match the inventory, then wait until every worker registers.

On a cluster that is not running this starts everything. On a running or half-running one it
reconciles: healthy processes are left alone, dead or changed ones are started again, groups no
longer in the inventory are stopped, and workers added with `add-worker` are kept.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterctl import scheduler_api, state, tls
from clusterctl.commands._common import (
    ClusterReport,
    Progress,
    build_report,
    dashboard_url,
    find_dead,
    start_and_wait,
    stop_records,
)
from clusterctl.commands.preflight import preflight
from clusterctl.errors import SchedulerUnreachableError
from clusterctl.fanout import fan_out, values_or_raise
from clusterctl.hosts import Host, connect
from clusterctl.inventory import Inventory, TlsFilesSpec, WorkerGroup, load_inventory
from clusterctl.launch import ProcessPlan, TlsPaths, address_host, plan_cluster, plan_worker_group, scheduler_address
from clusterctl.state import ClusterState, ProcessRecord
from clusterctl.tls import remote_files

DEFAULT_TIMEOUT = 60.0
STOP_GRACE = 5.0


@dataclass
class DryRun:
    cluster: str
    scheduler_address: str
    commands: dict[str, list[str]] = field(default_factory=dict)  # host -> shell-equivalent lines


@dataclass
class Reconciliation:
    """What `up` found and what it will do about it."""

    keep: list[ProcessRecord] = field(default_factory=list)
    stop: list[ProcessRecord] = field(default_factory=list)
    start: list[ProcessPlan] = field(default_factory=list)
    added: dict[str, dict[str, Any]] = field(default_factory=dict)  # add-worker groups to start again


def up(config: str, progress: Progress, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False,
       allow_version_mismatch: bool = False, restart: bool = False) -> ClusterReport | DryRun:
    inventory = load_inventory(config)
    with state.locked(inventory.name):
        previous = state.load(inventory.name)
        described = list(dict.fromkeys([inventory.scheduler.host, *(group.host for group in inventory.workers)]))
        recorded = [r.host for r in previous.processes] if previous else []  # added workers' hosts too
        with connect(inventory, described + recorded, progress.password) as hosts:
            listen_host = scheduler_listen_host(inventory, hosts)
            tls_paths = (lambda alias, role: remote_files(hosts[alias].run_dir, role)) \
                if inventory.security.enabled else None
            plans = plan_cluster(inventory, listen_host, tls_paths)
            address = scheduler_address(listen_host, inventory.scheduler.port, "tls" if tls_paths else "tcp")
            if dry_run:
                return _dry_run(inventory, hosts, plans, address)
            if isinstance(inventory.security.tls, TlsFilesSpec):
                tls.check_readable(inventory.security.tls)
            progress.step(f"checking {len(hosts)} host(s)")
            report = preflight({alias: hosts[alias] for alias in described}, inventory.scheduler.host,
                               allow_version_mismatch)
            st = ClusterState(
                name=inventory.name,
                inventory=inventory.model_dump(mode="json"),
                config_path=str(Path(config).resolve()),
                scheduler_address=address,
                dashboard_url=None,
                versions=report.versions.get(inventory.scheduler.host, {}),
                tls=inventory.security.enabled,
            )
            if inventory.security.enabled:
                progress.step("distributing TLS certificates")
                provision_tls(inventory, hosts, listen_host)
            todo = reconcile(inventory, st.scheduler_address, plans, previous, hosts, restart, tls_paths)
            result = _apply(st, hosts, todo, timeout, progress)
            if not inventory.security.enabled and not _is_loopback(listen_host):
                result.warnings.append(
                    f"TLS is off and the scheduler listens on {listen_host}:{inventory.scheduler.port}: anyone who "
                    "can reach that port can run code on every worker. Fix: add `security: {tls: auto}` to the "
                    "inventory and run `clusterctl up --restart`.")
            return result


def provision_tls(inventory: Inventory, hosts: dict[str, Host], listen_host: str) -> None:
    """Make (or adopt) the cluster's TLS files here, and copy each host the ones its processes need."""
    directory = state.tls_dir(inventory.name)
    state.cluster_dir(inventory.name).mkdir(mode=0o700, parents=True, exist_ok=True)
    spec = inventory.security.tls
    if isinstance(spec, TlsFilesSpec):
        tls.adopt(directory, spec.ca_file, spec.cert, spec.key)
    else:
        tls.generate(directory, inventory.name, [listen_host, hosts[inventory.scheduler.host].address])
    roles: dict[str, set[str]] = {inventory.scheduler.host: {"scheduler"}}
    for group in inventory.workers:
        roles.setdefault(group.host, set()).add("worker")
    values_or_raise("copying TLS files", fan_out(roles, lambda alias: upload_tls(hosts[alias], directory, roles[alias])))


def upload_tls(host: Host, directory: Path, roles: set[str]) -> None:
    files = {"tls/ca.pem": (directory / "ca.pem").read_bytes()}
    for role in roles:
        local = tls.local_files(directory, role)
        files[f"tls/{role}.pem"] = Path(local.cert).read_bytes()
        files[f"tls/{role}-key.pem"] = Path(local.key).read_bytes()
    host.upload(files)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def scheduler_listen_host(inventory: Inventory, hosts: dict[str, Host]) -> str:
    """Where the scheduler listens: its host's address, loopback when every host is this machine."""
    if all(host.settings.connection == "local" for host in hosts.values()):
        return inventory.host(inventory.scheduler.host).address or "127.0.0.1"
    return hosts[inventory.scheduler.host].address


def _dry_run(inventory: Inventory, hosts: dict[str, Host], plans: list[ProcessPlan], address: str) -> DryRun:
    result = DryRun(inventory.name, address)
    for plan in plans:
        result.commands.setdefault(plan.host, []).extend(hosts[plan.host].describe_start([plan]))
    return result


def reconcile(inventory: Inventory, address: str, plans: list[ProcessPlan], previous: ClusterState | None,
              hosts: dict[str, Host], restart: bool, tls_paths: TlsPaths = None) -> Reconciliation:
    """Compare the plan with what runs and decide what to start and stop.

    What runs is what is alive on its host *and* registered with the scheduler: a worker process
    that lives but that the scheduler has dropped (hung, cut off) is started again. When the
    scheduler does not answer, pid liveness alone decides, since its workers may be reconnecting.
    """
    todo = Reconciliation()
    if previous is None or not previous.processes:
        todo.start = list(plans)
        return todo
    dead = {id(r) for r in find_dead(hosts, previous.processes)}
    registered: set[str] | None = None
    scheduler = previous.process("scheduler")
    if scheduler is not None and id(scheduler) not in dead:  # a dead one would cost the query's timeout
        try:
            registered = scheduler_api.query(previous.scheduler_address, timeout=3.0,
                                             tls=previous.client_tls()).names()
        except SchedulerUnreachableError:
            pass
    alive = {r.name: r for r in previous.processes if id(r) not in dead}
    healthy = {name for name, r in alive.items()
               if registered is None or r.role != "worker" or set(r.worker_names) <= registered}
    wanted = {plan.name: plan for plan in plans}
    for record in previous.processes:
        if record.added and record.name not in wanted:
            group = WorkerGroup.model_validate(record.spec)
            wanted[record.name] = plan_worker_group(inventory, group, address, tls_paths)
            todo.added[record.name] = record.spec
    for name, plan in wanted.items():
        record = alive.get(name)
        if record is not None and name in healthy and not restart and _unchanged(record, plan):
            todo.keep.append(record)
            continue
        if record is not None:
            todo.stop.append(record)  # changed, restarted, or alive but lost to the scheduler
        todo.start.append(plan)
    todo.stop += [r for name, r in alive.items() if name not in wanted]  # groups gone from the inventory
    return todo


def _unchanged(record: ProcessRecord, plan: ProcessPlan) -> bool:
    return record.host == plan.host and record.worker_names == plan.worker_names and (
        not record.argv or record.argv == plan.argv)


def _apply(st: ClusterState, hosts: dict[str, Host], todo: Reconciliation, timeout: float,
           progress: Progress) -> ClusterReport:
    st.processes = list(todo.keep)
    if todo.stop:
        progress.step(f"stopping {len(todo.stop)} changed or removed process(es)")
        stop_records(hosts, todo.stop, STOP_GRACE)
    state.save(st)
    state.set_current(st.name)
    names = [name for r in st.processes if r.role == "worker" for name in r.worker_names]
    names += [name for plan in todo.start for name in plan.worker_names]
    view, started = start_and_wait(st, hosts, todo.start, names, timeout, progress, added=todo.added)
    # distributed registers its HTTP server as "dashboard" even under --no-dashboard.
    # A loopback-only dashboard has no URL from here: `clusterctl dashboard` tunnels to it.
    scheduler = st.model().scheduler
    wants_url = scheduler.dashboard_address is not None and scheduler.dashboard == "public"
    st.dashboard_url = dashboard_url(view, address_host(st.scheduler_address)) if wants_url else None
    state.save(st)
    report = build_report(st, view)
    report.started = [r.name for r in started]
    kept = len(todo.keep)
    report.headline = (f"started {len(started)} process(es)" + (f", kept {kept} running" if kept else "")
                       if started else "already running: nothing to start")
    return report
