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

from clusterctl import environment, lifecycle, scheduler_api, state, tls
from clusterctl.errors import SchedulerUnreachableError
from clusterctl.group import HostGroup, connect
from clusterctl.inventory import Inventory, TlsFilesSpec, WorkerGroup, load_inventory
from clusterctl.launch import ProcessPlan, SchedulerEndpoint, plan_cluster, plan_worker_group
from clusterctl.preflight import preflight
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import ProcessRecord
from clusterctl.report import ClusterReport, build_report, dashboard_url
from clusterctl.state import ClusterState
from clusterctl.timing import RESTART_GRACE, WORKER_TIMEOUT


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


def up(config: str, progress: Progress, password_prompt: PasswordPrompt | None = None,
       timeout: float = WORKER_TIMEOUT, dry_run: bool = False, allow_version_mismatch: bool = False,
       restart: bool = False) -> ClusterReport | DryRun:
    inventory = load_inventory(config)
    with state.locked(inventory.name):
        previous = state.load(inventory.name)
        described = list(dict.fromkeys([inventory.scheduler.host, *(group.host for group in inventory.workers)]))
        recorded = [r.host for r in previous.processes] if previous else []  # added workers' hosts too
        with connect(inventory, described + recorded, password_prompt) as hosts:
            endpoint = lifecycle.scheduler_endpoint(inventory, hosts)
            run_dirs = lifecycle.tls_dirs(hosts, inventory.security.enabled)
            plans = plan_cluster(inventory, endpoint, run_dirs)
            if dry_run:
                return _dry_run(inventory, hosts, plans, endpoint.address)
            if isinstance(inventory.security.tls, TlsFilesSpec):
                tls.check_readable(inventory.security.tls)
            synced = None
            if inventory.environment.sync:  # every process then runs its host's venv python
                synced = environment.sync_hosts(inventory.name, inventory.environment, Path(config).resolve().parent,
                                                HostGroup({alias: hosts[alias] for alias in described}), progress)
                inventory = environment.synced_inventory(inventory, environment.use_venvs(hosts, synced))
                plans = plan_cluster(inventory, endpoint, run_dirs)
            progress.step(f"checking {len(hosts)} host(s)")
            report = preflight(HostGroup({alias: hosts[alias] for alias in described}), inventory.scheduler.host,
                               allow_version_mismatch, packages=inventory.environment.packages, compare_local=True)
            st = ClusterState(
                name=inventory.name,
                inventory=inventory,
                config_path=str(Path(config).resolve()),
                scheduler_address=endpoint.address,
                scheduler_host=endpoint.listen_host,
                dashboard_url=None,
                versions=report.versions.get(inventory.scheduler.host, {}),
                tls=inventory.security.enabled,
            )
            if inventory.security.enabled:
                progress.step("distributing TLS certificates")
                lifecycle.provision_tls(inventory, hosts, endpoint)
            # Processes keep what they imported: a changed environment restarts all, so every one agrees.
            restart = restart or (synced is not None and any(h.installed for h in synced.hosts))
            todo = reconcile(inventory, endpoint, plans, previous, hosts, restart, run_dirs)
            result = _apply(st, hosts, todo, timeout, progress)
            result.warnings += report.warnings
            if synced is not None:
                result.environment = synced.document()
                result.headline = f"{synced.headline}; {result.headline}"
            if not inventory.security.enabled and not _is_loopback(endpoint.listen_host):
                result.warnings.append(
                    f"TLS is off and the scheduler listens on {endpoint.listen_host}:{endpoint.port}: anyone who "
                    "can reach that port can run code on every worker. Fix: add `security: {tls: auto}` to the "
                    "inventory and run `clusterctl up --restart`.")
            return result


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _dry_run(inventory: Inventory, hosts: HostGroup, plans: list[ProcessPlan], address: str) -> DryRun:
    result = DryRun(inventory.name, address)
    for plan in plans:
        result.commands.setdefault(plan.host, []).extend(hosts[plan.host].describe_start([plan]))
    return result


def reconcile(inventory: Inventory, endpoint: SchedulerEndpoint, plans: list[ProcessPlan],
              previous: ClusterState | None, hosts: HostGroup, restart: bool,
              run_dirs: dict[str, str] | None = None) -> Reconciliation:
    """Compare the plan with what runs and decide what to start and stop.

    What runs is what is alive on its host *and* registered with the scheduler: a worker process
    that lives but that the scheduler has dropped (hung, cut off) is started again. When the
    scheduler does not answer, pid liveness alone decides, since its workers may be reconnecting.
    """
    todo = Reconciliation()
    if previous is None or not previous.processes:
        todo.start = list(plans)
        return todo
    dead = {id(r) for r in lifecycle.find_dead(hosts, previous.processes)}
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
            wanted[record.name] = plan_worker_group(inventory, group, endpoint.address, run_dirs)
            todo.added[record.name] = record.spec
    for name, plan in wanted.items():
        running = alive.get(name)
        if running is not None and name in healthy and not restart and _unchanged(running, plan):
            todo.keep.append(running)
            continue
        if running is not None:
            todo.stop.append(running)  # changed, restarted, or alive but lost to the scheduler
        todo.start.append(plan)
    todo.stop += [r for name, r in alive.items() if name not in wanted]  # groups gone from the inventory
    return todo


def _unchanged(record: ProcessRecord, plan: ProcessPlan) -> bool:
    return record.host == plan.host and record.worker_names == plan.worker_names and (
        not record.argv or record.argv == plan.argv)


def _apply(st: ClusterState, hosts: HostGroup, todo: Reconciliation, timeout: float,
           progress: Progress) -> ClusterReport:
    st.processes = list(todo.keep)
    if todo.stop:
        progress.step(f"stopping {len(todo.stop)} changed or removed process(es)")
        lifecycle.stop_records(hosts, todo.stop, RESTART_GRACE)
    state.save(st)
    state.set_current(st.name)
    names = [name for r in st.processes if r.role == "worker" for name in r.worker_names]
    names += [name for plan in todo.start for name in plan.worker_names]
    view, started = lifecycle.start_and_wait(st, hosts, todo.start, names, timeout, progress, added=todo.added)
    # distributed registers its HTTP server as "dashboard" even under --no-dashboard.
    # A loopback-only dashboard has no URL from here: `clusterctl dashboard` tunnels to it.
    scheduler = st.inventory.scheduler
    wants_url = scheduler.dashboard_address is not None and scheduler.dashboard == "public"
    st.dashboard_url = dashboard_url(view, st.scheduler_host) if wants_url else None
    state.save(st)
    report = build_report(st, view)
    report.started = [r.name for r in started]
    kept = len(todo.keep)
    report.headline = (f"started {len(started)} process(es)" + (f", kept {kept} running" if kept else "")
                       if started else "already running: nothing to start")
    return report
