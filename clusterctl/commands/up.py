"""`clusterctl up CONFIG`: make what runs match the inventory, then wait until every worker registers.

On a cluster that is not running this starts everything. On a running or half-running one it
reconciles: healthy processes are left alone, dead or changed ones are started again, groups no
longer in the inventory are stopped, and workers added with `add-worker` are kept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clusterctl import elastic, environment, lifecycle, rolling, scheduler_api, state, tls
from clusterctl.errors import (
    ClusterctlError,
    ForeignSchedulerError,
    HostError,
    InvalidInputError,
    SchedulerUnreachableError,
)
from clusterctl.group import HostGroup, connect
from clusterctl.inventory import Inventory, TlsFilesSpec, WorkerGroup, load_inventory, select_hosts
from clusterctl.launch import (
    SCHEDULER_NAME,
    ProcessPlan,
    SchedulerEndpoint,
    gpu_groups_unplanned,
    new_scheduler_id,
    plan_cluster,
    plan_worker_group,
)
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.preflight import PreflightReport, VersionMismatchError, gpu_probes, preflight
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import Gpu, ProcessRecord
from clusterctl.report import ClusterReport, build_report, dashboard_url
from clusterctl.state import ClusterState
from clusterctl.timing import LOST_WORKER_GRACE, RESTART_GRACE, WORKER_TIMEOUT


@dataclass
class DryRun:
    cluster: str
    scheduler_address: str
    commands: dict[str, list[str]] = field(default_factory=dict)  # host -> shell-equivalent lines
    processes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # host -> what starts there
    notes: dict[str, list[str]] = field(default_factory=dict)  # host -> what only `up` can know (its GPUs)
    addresses: dict[str, str] = field(default_factory=dict)  # host -> the address it is reached at


@dataclass
class Reconciliation:
    """What `up` found and what it will do about it."""

    keep: list[ProcessRecord] = field(default_factory=list)
    stop: list[ProcessRecord] = field(default_factory=list)
    start: list[ProcessPlan] = field(default_factory=list)
    added: dict[str, dict[str, Any]] = field(default_factory=dict)  # add-worker groups to start again
    wanted: list[ProcessPlan] = field(default_factory=list)  # every process the cluster should have
    why: dict[str, str] = field(default_factory=dict)  # process name -> why it is started again
    elastic: set[str] = field(default_factory=set)  # of those, the ones `scale`/`adapt` added (or `minimum` needs)
    untouched: list[ProcessRecord] = field(default_factory=list)  # on hosts `--limit` leaves out: kept as recorded


def up(config: str, progress: Progress, password_prompt: PasswordPrompt | None = None,
       timeout: float = WORKER_TIMEOUT, dry_run: bool = False, allow_version_mismatch: bool = False,
       restart: bool = False, rolling: bool = False, max_unavailable: int = 1,
       limit: list[str] | None = None) -> ClusterReport | DryRun:
    inventory = load_inventory(config)
    if rolling and restart:
        raise InvalidInputError("--rolling and --restart exclude each other",
                                "--rolling restarts changed groups one at a time; --restart all at once")
    if rolling and limit:
        raise InvalidInputError("--rolling and --limit exclude each other",
                                "roll the whole cluster, or apply the change to some hosts with --limit alone")
    with state.locked(inventory.name):
        previous = state.load(inventory.name)
        pool = select_hosts(inventory, inventory.elastic.hosts) if inventory.elastic else []
        described = list(dict.fromkeys([inventory.scheduler.host, *(group.host for group in inventory.workers),
                                        *pool]))  # elastic hosts are checked too: scaling starts workers there
        recorded = [r.host for r in previous.processes] if previous else []  # added workers' hosts too
        # --limit: only these hosts are checked, started or stopped; the scheduler's host is asked too
        chosen = limit_hosts(inventory, cluster_hosts(inventory, recorded), limit) if limit else None
        looked_at = [alias for alias in described if chosen is None or alias in chosen
                     or alias == inventory.scheduler.host]
        with connect(inventory, described + recorded, password_prompt) as hosts:
            endpoint = lifecycle.scheduler_endpoint(inventory, hosts)
            run_dirs = lifecycle.tls_dirs(hosts, inventory.security.enabled, resolve=not dry_run)
            # The identity our scheduler carries, kept across restarts: what every command verifies.
            scheduler_id = previous.scheduler_id if previous and previous.scheduler_id else new_scheduler_id(
                inventory.name)
            plans = plan_cluster(inventory, endpoint, run_dirs, scheduler_id)
            if dry_run:
                return _dry_run(inventory, hosts, [p for p in plans if chosen is None or p.host in chosen],
                                endpoint.address)
            if isinstance(inventory.security.tls, TlsFilesSpec):
                tls.check_readable(inventory.security.tls)
            # A new cluster's scheduler port must be free: asked before anything slow, with the versions
            # when nothing slow comes first (one round trip less on the scheduler host).
            new_cluster = previous is None or previous.process("scheduler") is None
            if new_cluster and inventory.environment.sync:
                lifecycle.refuse_taken_scheduler_port(hosts, inventory, endpoint, None, early=True)
            synced = None
            if inventory.environment.sync:  # every process then runs its host's venv python
                synced = environment.sync_hosts(inventory.name, inventory.environment, Path(config).resolve().parent,
                                                HostGroup({alias: hosts[alias] for alias in looked_at}), progress)
                inventory = environment.synced_inventory(inventory, environment.use_venvs(hosts, synced))
                plans = plan_cluster(inventory, endpoint, run_dirs, scheduler_id)
            progress.step(f"checking {len(looked_at)} host(s)")
            for alias in looked_at:  # each agent that checks a host stays for its start: one command per host
                hosts[alias].hold_agent = True
            free_port = (endpoint.listen_host, endpoint.port) if new_cluster else None
            report = _preflight(HostGroup({alias: hosts[alias] for alias in looked_at}), inventory,
                                allow_version_mismatch, progress, free_port,
                                lambda answer: lifecycle.refuse_taken_port(inventory.scheduler.host, endpoint, answer,
                                                                           None))
            if report.gpus:  # one worker per GPU found: now the plan is complete
                plans = plan_cluster(inventory, endpoint, run_dirs, scheduler_id, report.gpus)
            st = ClusterState(
                name=inventory.name,
                inventory=inventory,
                config_path=str(Path(config).resolve()),
                scheduler_address=endpoint.address,
                scheduler_host=endpoint.listen_host,
                dashboard_url=None,
                versions=report.versions.get(inventory.scheduler.host, {}),
                tls=inventory.security.enabled,
                scheduler_id=scheduler_id,
                supervisor=previous.supervisor if previous else None,
            )
            if inventory.security.enabled:
                progress.step("distributing TLS certificates")
                lifecycle.provision_tls(inventory, hosts, endpoint)
            # Processes keep what they imported: a changed environment restarts all, so every one agrees.
            restart = restart or (synced is not None and any(h.installed for h in synced.hosts))
            if chosen is not None:
                todo = _reconcile_limited(inventory, endpoint, plans, previous, hosts, restart, run_dirs, chosen)
            else:
                todo = reconcile(inventory, endpoint, plans, previous, hosts, restart, run_dirs)
                _keep_minimum(inventory, endpoint, todo, run_dirs)
            starting = {plan.host for plan in todo.start}
            for alias in looked_at:
                if alias not in starting:
                    running = sum(1 for r in todo.keep if r.host == alias)
                    progress.host(alias, "kept", f"{running} process(es) running" if running else "nothing to start")
            if rolling:
                result = _apply_rolling(st, hosts, todo, timeout, progress, max_unavailable, endpoint)
            else:
                result = _apply(st, hosts, todo, timeout, progress, endpoint, port_checked=report.free_port is not None)
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


def _preflight(group: HostGroup, inventory: Inventory, allow_version_mismatch: bool, progress: Progress,
               free_port: tuple[str, int] | None = None,
               refuse_port: Callable[[dict[str, Any]], None] | None = None) -> PreflightReport:
    """The preflight, each host shown connecting, then checked as it answers, or failed with its reason;
    with ``free_port``, the scheduler host says in the same answer whether its port is free."""
    for alias in group:
        progress.host(alias, "connecting")
    try:
        report = preflight(group, inventory.scheduler.host, allow_version_mismatch,
                           packages=inventory.environment.packages, compare_local=True,
                           gpu_probes={alias: probe for alias, probe in gpu_probes(inventory).items() if alias in group},
                           progress=progress, free_port=free_port, refuse_port=refuse_port)
    except VersionMismatchError as exc:
        for alias, packages in exc.report.mismatched.items():
            progress.host(alias, "failed", f"other versions of {', '.join(packages)}")
        raise
    except HostError as exc:
        progress.host(exc.host, "failed", exc.reason)
        raise
    return report


def _reconcile_limited(inventory: Inventory, endpoint: SchedulerEndpoint, plans: list[ProcessPlan],
                       previous: ClusterState | None, hosts: HostGroup, restart: bool,
                       run_dirs: dict[str, str] | None, chosen: list[str]) -> Reconciliation:
    """`up --limit`: reconcile the chosen hosts only; every record elsewhere stays as it is, unawaited.

    The scheduler is looked at wherever it runs (workers need it), but started again only on a chosen
    host and only when no worker runs elsewhere: dask workers exit with their scheduler.
    """
    scheduler_host = inventory.scheduler.host
    mine = [r for r in previous.processes if r.host in chosen or r.name == SCHEDULER_NAME] if previous else []
    seen = replace(previous, processes=mine) if previous else None
    todo = reconcile(inventory, endpoint, [p for p in plans if p.host in chosen or p.role == "scheduler"],
                     seen, hosts, restart, run_dirs)
    todo.untouched = [r for r in previous.processes if r not in mine] if previous else []
    if any(plan.role == "scheduler" for plan in todo.start):
        if scheduler_host not in chosen:
            raise InvalidInputError(f"the scheduler of cluster {inventory.name!r} must be started again on "
                                    f"{scheduler_host}, which --limit leaves out",
                                    f"add `--limit {scheduler_host}`, or run `clusterctl up` without --limit")
        elsewhere = sorted({r.host for r in todo.untouched})
        if elsewhere:
            raise InvalidInputError(f"the scheduler of cluster {inventory.name!r} must be started again, and dask "
                                    f"workers exit with their scheduler: those on {', '.join(elsewhere)} (outside "
                                    "--limit) would stop too", "run `clusterctl up` without --limit")
    return todo


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _dry_run(inventory: Inventory, hosts: HostGroup, plans: list[ProcessPlan], address: str) -> DryRun:
    result = DryRun(inventory.name, address)
    for plan in plans:
        result.commands.setdefault(plan.host, []).extend(hosts[plan.host].describe_start([plan]))
        result.addresses[plan.host] = hosts[plan.host].address
        result.processes.setdefault(plan.host, []).append({
            "name": plan.name, "role": plan.role, "group": plan.group, "worker_names": plan.worker_names,
            "argv": plan.argv, "gpu": plan.gpu.index if plan.gpu else None,
            "cuda_visible_devices": plan.env.get("CUDA_VISIBLE_DEVICES") if plan.gpu else None})
    for group in gpu_groups_unplanned(inventory, None):
        result.addresses[group.host] = hosts[group.host].address
        result.notes.setdefault(group.host, []).append(
            f"{group.name}: one worker per GPU that nvidia-smi lists on {group.host} when `up` runs, named "
            f"{group.name}-gpu<index>, each with GPU=1 and CUDA_VISIBLE_DEVICES starting with its own GPU")
    return result


def reconcile(inventory: Inventory, endpoint: SchedulerEndpoint, plans: list[ProcessPlan],
              previous: ClusterState | None, hosts: HostGroup, restart: bool,
              run_dirs: dict[str, str] | None = None) -> Reconciliation:
    """Compare the plan with what runs and decide what to start and stop.

    What runs is what is alive on its host *and* registered with the scheduler: a worker process
    that lives but that the scheduler has dropped (hung, cut off) is started again. When the
    scheduler does not answer, pid liveness alone decides, since its workers may be reconnecting.
    """
    todo = Reconciliation(wanted=list(plans))
    if previous is None or not previous.processes:
        todo.start = list(plans)
        return todo
    dead = {id(r) for r in lifecycle.find_dead(hosts, previous.processes)}
    registered: set[str] | None = None
    scheduler = previous.process("scheduler")
    if scheduler is not None and id(scheduler) not in dead:  # a dead one would cost the query's timeout
        try:
            registered = scheduler_api.query(previous.scheduler_address, timeout=3.0, tls=previous.client_tls(),
                                             expect=previous.expected_scheduler_id()).names()
        except SchedulerUnreachableError:
            pass
        except ForeignSchedulerError:
            dead.add(id(scheduler))  # ours does not answer there: start it again (the port check speaks)
    alive = {r.name: r for r in previous.processes if id(r) not in dead}
    if registered is not None and not restart:  # --restart renews them all: no need to wait
        registered = _registered_after_grace(previous, alive, registered)
    healthy = {name for name, r in alive.items()
               if registered is None or r.role != "worker" or set(r.worker_names) <= registered}
    wanted = {plan.name: plan for plan in plans}
    for record in previous.processes:
        if record.added and record.name not in wanted:
            group = WorkerGroup.model_validate(record.spec)
            wanted[record.name] = plan_worker_group(inventory, group, endpoint.address, run_dirs)
            if record.gpu is not None:  # `add-worker --gpus`: its group carries the GPU env, the record the GPU
                wanted[record.name] = replace(wanted[record.name], gpu=Gpu(**record.gpu))
            todo.added[record.name] = record.spec
            todo.wanted.append(wanted[record.name])
            if record.elastic:
                todo.elastic.add(record.name)
    for name, plan in wanted.items():
        running = alive.get(name)
        if running is not None and name in healthy and not restart and _unchanged(running, plan):
            todo.keep.append(running)
            continue
        if running is not None:
            todo.stop.append(running)  # changed, restarted, or alive but lost to the scheduler
            if name not in healthy:
                todo.why[name] = (f"alive but not registered with the scheduler for {LOST_WORKER_GRACE:g}s "
                                  "(hung or cut off)")
        elif any(r.name == name for r in previous.processes):
            todo.why[name] = "its process had exited"
        todo.start.append(plan)
    todo.stop += [r for name, r in alive.items() if name not in wanted]  # groups gone from the inventory
    if any(plan.role == "scheduler" for plan in todo.start):
        # distributed's workers do not rejoin a new scheduler (they shut down once theirs is gone):
        # a scheduler started again needs its workers started again too, not kept half-closed.
        for record in [r for r in todo.keep if r.role == "worker"]:
            todo.keep.remove(record)
            todo.stop.append(record)
            todo.start.append(wanted[record.name])
            todo.why[record.name] = "the scheduler was started again"
    return todo


def _registered_after_grace(previous: ClusterState, alive: dict[str, ProcessRecord], registered: set[str]
                            ) -> set[str]:
    """The registered worker names, after waiting a grace for live workers the scheduler lacks.

    A busy machine delays heartbeats and (re)registration: only a worker still absent after the
    grace is taken for lost, so a healthy worker is never restarted because the scheduler was slow.
    """
    lacking = {w for r in alive.values() if r.role == "worker" for w in r.worker_names} - registered
    if not lacking:
        return registered
    view = scheduler_api.wait_for_workers(previous.scheduler_address, lacking | registered, LOST_WORKER_GRACE,
                                          lambda _: None, previous.client_tls(),
                                          expect=previous.expected_scheduler_id())
    return view.names() if view is not None else registered


def _port_of(address: str | None) -> int | None:
    """The port of a dashboard address such as ``:8787`` or ``127.0.0.1:8787``; None for none or 0."""
    port = (address or "").rsplit(":", 1)[-1]
    return int(port) if port.isdigit() and int(port) else None


def _keep_minimum(inventory: Inventory, endpoint: SchedulerEndpoint, todo: Reconciliation,
                  run_dirs: dict[str, str] | None) -> None:
    """Elastic workers to start so that the cluster has at least `elastic.minimum` workers."""
    present: list[elastic.Placed] = [*todo.keep, *todo.start]
    missing = (inventory.elastic.minimum if inventory.elastic else 0) - sum(len(p.worker_names) for p in present)
    if missing <= 0:
        return
    for group in elastic.additions(inventory, present, missing):
        assert group.name is not None
        todo.start.append(plan_worker_group(inventory, group, endpoint.address, run_dirs))
        todo.added[group.name] = group.model_dump(mode="json")
        todo.elastic.add(group.name)


def _unchanged(record: ProcessRecord, plan: ProcessPlan) -> bool:
    """Nothing `up` would start differs from what runs (a field a record lacks is not compared)."""
    return record.host == plan.host and record.worker_names == plan.worker_names and (
        not record.argv or record.argv == plan.argv) and (
        record.env is None or record.env == plan.env) and (record.setup is None or record.setup == plan.setup)


def _apply_rolling(st: ClusterState, hosts: HostGroup, todo: Reconciliation, timeout: float, progress: Progress,
                   max_unavailable: int, endpoint: SchedulerEndpoint) -> ClusterReport:
    """Worker groups one batch at a time; a changed scheduler means a restart of everything, said plainly."""
    scheduler = next((r for r in [*todo.keep, *todo.stop] if r.name == SCHEDULER_NAME), None)
    if scheduler is None:
        raise ClusterctlError(f"cluster {st.name!r} has no running scheduler: there is nothing to roll",
                              "start it with `clusterctl up CONFIG` (without --rolling)")
    state.set_current(st.name)
    if scheduler in todo.stop:
        # dask workers exit with their scheduler, and new workers need the new one: nothing can roll.
        progress.step("the scheduler's command line changed: restarting it, and every worker with it")
        report = _apply(st, hosts, Reconciliation(stop=[*todo.keep, *todo.stop], start=list(todo.wanted),
                                                  added=todo.added), timeout, progress, endpoint)
        report.warnings.append("the scheduler's own command line changed, so it was restarted: that loses its "
                               "in-memory state (tasks and results), and every worker group restarted with it, as "
                               "dask workers exit with their scheduler")
        report.headline = f"restarted the scheduler and {len(report.started) - 1} worker group(s)"
        return report
    changes = rolling.changes(todo.stop, todo.start)
    running = [*todo.keep, *(c.old for c in changes if c.old)]
    rolled = rolling.roll(st, hosts, running, changes, max_unavailable, timeout, progress)
    view = rolled.view
    if view is None:  # nothing was started: the view is asked for once, for the report
        try:
            view = scheduler_api.query(st.scheduler_address, tls=st.client_tls(), expect=st.expected_scheduler_id())
        except SchedulerUnreachableError as exc:
            return build_report(st, None, error=exc.message)
    report = build_report(st, view)
    report.started = [r.name for r in rolled.started]
    report.headline = (f"rolled {len(rolled.rolled)} worker group(s), at most {max_unavailable} at a time"
                       if rolled.rolled else "already running: nothing to roll")
    return report


def _apply(st: ClusterState, hosts: HostGroup, todo: Reconciliation, timeout: float,
           progress: Progress, endpoint: SchedulerEndpoint, port_checked: bool = False) -> ClusterReport:
    st.processes = [*todo.untouched, *todo.keep]
    if todo.stop:
        progress.step(f"stopping {len(todo.stop)} changed or removed process(es)")
        lifecycle.stop_records(hosts, todo.stop, RESTART_GRACE)
    # A port the preflight found free a moment ago (nothing of ours was stopped since) needs no second look.
    if any(plan.role == "scheduler" for plan in todo.start) and not (port_checked and not todo.stop):
        try:
            lifecycle.refuse_taken_scheduler_port(hosts, st.inventory, endpoint, st.client_tls())
        except ClusterctlError:
            if st.processes:
                state.save(st)
            else:
                state.remove(st.name)
            raise
    state.save(st)
    state.set_current(st.name)
    names = [name for r in todo.keep if r.role == "worker" for name in r.worker_names]
    names += [name for plan in todo.start for name in plan.worker_names]
    view, started = lifecycle.start_and_wait(st, hosts, todo.start, names, timeout, progress, added=todo.added)
    for record in started:
        record.elastic = record.name in todo.elastic
    # distributed registers its HTTP server as "dashboard" even under --no-dashboard.
    # A loopback-only dashboard has no URL from here: `clusterctl dashboard` tunnels to it.
    scheduler = st.inventory.scheduler
    wants_url = scheduler.dashboard_address is not None and scheduler.dashboard == "public"
    st.dashboard_url = dashboard_url(view, st.scheduler_host) if wants_url else None
    state.save(st)
    report = build_report(st, view)
    report.started = [r.name for r in started]
    kept = len(todo.keep)
    report.warnings += [f"{name} started again: {why}" for name, why in todo.why.items()]
    asked = _port_of(scheduler.dashboard_address)
    if asked and view.dashboard_port and view.dashboard_port != asked:  # distributed picks another, silently
        report.warnings.append(f"the dashboard port {asked} was taken on {scheduler.host}: the dashboard "
                               f"listens on port {view.dashboard_port} instead (set `scheduler.dashboard_address` "
                               "to a free port)")
    report.headline = (f"started {len(started)} process(es)" + (f", kept {kept} running" if kept else "")
                       if started else "already running: nothing to start")
    return report
