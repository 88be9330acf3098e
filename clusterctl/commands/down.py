"""`clusterctl down`: close through the scheduler, stop every process by pid, verify, forget.

Processes are found twice over: in the local state, and in the pid files of each host's run
directory. So `down CONFIG` works with no local state at all (another machine, a deleted
~/.clusterctl), and a process whose pid never reached the state (an interrupted `up`) is found.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterctl import lifecycle, scheduler_api, state, supervisor
from clusterctl.errors import (
    ClusterctlError,
    ForeignSchedulerError,
    HostError,
    InvalidInputError,
    SchedulerUnreachableError,
)
from clusterctl.group import HostGroup, connect
from clusterctl.host import Host
from clusterctl.inventory import Inventory, load_inventory, select_hosts
from clusterctl.launch import scheduler_id_prefix
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import ProcessRecord, StopOutcome, StoppedProcess
from clusterctl.state import ClusterState
from clusterctl.timing import DOWN_GRACE


@dataclass
class DownResult:
    cluster: str | None  # None: there is no current cluster
    stopped: list[StoppedProcess] = field(default_factory=list)
    already_gone: bool = False
    scheduler_note: str | None = None
    without_state: bool = False
    notes: list[str] = field(default_factory=list)
    unrecorded_scheduler: str | None = None  # without state: a scheduler answered there, found by no pid file


class DownIncompleteError(ClusterctlError):
    pass


def down(progress: Progress, cluster: str | None = None, config: str | None = None,
         grace: float = DOWN_GRACE, password_prompt: PasswordPrompt | None = None,
         limit: list[str] | None = None) -> DownResult:
    if cluster is None and config is None and state.current() is None:
        return DownResult(None, already_gone=True)  # nothing is current: down is harmless
    inventory = load_inventory(config) if config else None
    name = state.resolve_name(cluster, None) if cluster or not inventory else inventory.name
    if limit:
        return _down_limited(progress, name, inventory, limit, grace, password_prompt)
    stopped_supervisor = _stop_supervisor(name, grace, progress)  # before the lock: it may be scaling, holding it
    with state.locked(name):
        st = state.load(name)
        if st is None and inventory is None:
            return DownResult(name, already_gone=True)
        result = DownResult(name, without_state=st is None)
        if stopped_supervisor:
            result.stopped.append(stopped_supervisor)
        if st is not None:
            inventory = st.inventory
        assert inventory is not None
        records = st.processes if st else []
        used = [inventory.scheduler.host, *(g.host for g in inventory.workers), *(r.host for r in records)]
        # Without state, any host of the inventory may hold a worker that add-worker put there.
        pool = select_hosts(inventory, inventory.elastic.hosts) if inventory.elastic else []
        spare = [alias for alias in [*inventory.hosts, *pool] if alias not in used] if st is None else []
        if st is None:  # and hosts outside the inventory that add-worker used, as the scheduler's host notes them
            spare += [a for a in _noted_elsewhere(inventory, password_prompt) if a not in used and a not in spare]
        aliases = list(dict.fromkeys(used + spare))
        with connect(inventory, aliases, password_prompt) as hosts:
            if st is not None and st.process("scheduler") is not None:
                # Graceful first, through the scheduler, while the hosts are being connected to.
                connected = _connect_while(hosts, lambda: _close_scheduler(st, progress), progress)
                result.scheduler_note = connected.note
            else:
                connected = _connect_while(hosts, lambda: None, progress)
            progress.step(f"stopping the processes on {len(aliases)} host(s) and verifying they are gone")
            if st is None:
                result.unrecorded_scheduler = _close_unrecorded_scheduler(inventory, hosts, progress)
            swept = hosts.run(lambda host: _sweep(host, [r for r in records if r.host == host.alias], grace, progress),
                              only=[alias for alias in aliases if alias not in connected.failed])
        progress.done()
        unreached = {**connected.failed, **swept.failed}
        unreachable_spares = {alias: error for alias, error in unreached.items() if alias in spare}
        result.notes += [f"{error.message}: not checked; it runs no process of the inventory"
                         for error in unreachable_spares.values()]
        failed = {alias: error for alias, error in unreached.items() if alias not in unreachable_spares}
        return _conclude(name, st, result, records, swept.succeeded, failed)


@dataclass
class _Connected:
    failed: dict[str, HostError]  # the hosts that could not be connected to, and why
    note: str | None  # what ``meanwhile`` returned


def _connect_while(hosts: HostGroup, meanwhile: Callable[[], str | None], progress: Progress) -> _Connected:
    """Connect to every host at once while ``meanwhile`` runs (the scheduler retiring its workers):
    the two waits overlap. A host that fails is not tried again by the sweep (its timeout once)."""
    outcome: list[str | None] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(meanwhile())
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        connected = hosts.run(lambda host: host.transport.connect())
    finally:
        worker.join()
    if errors:
        raise errors[0]
    for alias, error in connected.failed.items():
        progress.host(alias, "failed", error.reason)
    return _Connected(connected.failed, outcome[0] if outcome else None)


def _down_limited(progress: Progress, name: str, inventory: Inventory | None, limit: list[str], grace: float,
                  password_prompt: PasswordPrompt | None) -> DownResult:
    """`down --limit`: retire the workers of the selected hosts (their data moves to the others), stop
    their processes by pid, verify, and keep the rest of the cluster running and recorded.

    The scheduler's host may be selected only with every host that runs workers: dask workers exit
    with their scheduler, so stopping it alone would take the whole cluster down unverified.
    """
    with state.locked(name):
        st = state.load(name)
        if st is None:
            if inventory is not None:  # a pattern that names no host is still the error to show first
                limit_hosts(inventory, cluster_hosts(inventory), limit)
            raise ClusterctlError(f"cluster {name!r} is not running here (no state): `down --limit` needs the state "
                                  "to retire the workers through the scheduler",
                                  "run `clusterctl down CONFIG` without --limit to stop it from the hosts' pid files")
        chosen = limit_hosts(st.inventory, cluster_hosts(st.inventory, [r.host for r in st.processes]), limit)
        leaving = [r for r in st.processes if r.host in chosen]
        staying = [r for r in st.processes if r.host not in chosen]
        scheduler = st.process("scheduler")
        if scheduler is None or scheduler not in leaving:
            return _retire_hosts(progress, st, chosen, leaving, limit, grace, password_prompt)
        if staying:
            raise InvalidInputError(
                f"--limit selects {scheduler.host}, the scheduler's host, but not "
                f"{', '.join(dict.fromkeys(r.host for r in staying))}: dask workers exit with their scheduler, so "
                "the rest could not keep running",
                f"leave {scheduler.host} out of --limit, or run `clusterctl down` for the whole cluster")
    result = down(progress, name, None, grace, password_prompt)  # every host with a process is selected
    result.notes.append("--limit selects the scheduler's host and every host with a worker: the whole cluster "
                        "went down")
    return result


def _retire_hosts(progress: Progress, st: ClusterState, chosen: list[str], leaving: list[ProcessRecord],
                  limit: list[str], grace: float, password_prompt: PasswordPrompt | None) -> DownResult:
    """The workers on ``chosen`` retired, their processes stopped and verified gone, the state updated."""
    result = DownResult(st.name)
    workers = {w for r in leaving for w in r.worker_names}
    aliases = list(dict.fromkeys(r.host for r in leaving))
    if not workers:
        result.notes.append(f"no process of cluster {st.name} runs on {', '.join(chosen)}: nothing to stop")
        return result
    for alias in aliases:
        progress.host(alias, "retiring", f"{sum(len(r.worker_names) for r in leaving if r.host == alias)} worker(s)")
    retry = " ".join(["clusterctl down --cluster", shlex.quote(st.name), *(f"--limit {shlex.quote(p)}" for p in limit)])
    try:
        stopped, note = lifecycle.retire_and_stop(st, workers, _scheduler_answers(st), progress, password_prompt,
                                                  retry=retry, grace=grace)
    except ClusterctlError as exc:
        for alias in aliases:
            progress.host(alias, "failed", exc.message)
        progress.done()
        raise
    for alias in aliases:
        progress.host(alias, "stopped", f"{sum(1 for p in stopped if p.host == alias)} process(es) verified gone")
    progress.done()
    result.stopped = stopped
    result.scheduler_note = note
    kept = list(dict.fromkeys(r.host for r in st.processes))
    result.notes.append(f"cluster {st.name} keeps running on {', '.join(kept)}")
    return result


def _scheduler_answers(st: ClusterState) -> bool:
    """A quick question first: retiring through a dead scheduler would wait out its timeout."""
    try:
        scheduler_api.query(st.scheduler_address, timeout=2.0, tls=st.client_tls(), expect=st.expected_scheduler_id())
    except (SchedulerUnreachableError, ForeignSchedulerError):
        return False
    return True


def _sweep(host: Host, records: list[ProcessRecord], grace: float, progress: Progress) -> list[StopOutcome]:
    """``host.sweep``, its row shown stopping, then stopped or failed with the reason."""
    progress.host(host.alias, "stopping", "")
    try:
        outcomes = host.sweep(records, grace)
    except ClusterctlError as exc:
        progress.host(host.alias, "failed", exc.reason if isinstance(exc, HostError) else exc.message)
        raise
    running = [p for p in outcomes if not p.gone]
    progress.host(host.alias, "failed" if running else "stopped",
                  f"{len(running)} process(es) still run after SIGKILL" if running
                  else f"{len(outcomes)} process(es) verified gone")
    return outcomes


def _noted_elsewhere(inventory: Inventory, password_prompt: PasswordPrompt | None) -> list[str]:
    """The hosts outside the inventory that the scheduler host's run directory points at (add-worker's notes).

    An unreachable scheduler host gives none here; the sweep that follows names it.
    """
    with connect(inventory, [inventory.scheduler.host], password_prompt) as hosts:
        try:
            return hosts[inventory.scheduler.host].elsewhere()
        except HostError:
            return []


def _stop_supervisor(name: str, grace: float, progress: Progress) -> StoppedProcess | None:
    """Stop the cluster's `clusterctl adapt` supervisor, so that it scales nothing while the cluster goes."""
    st = state.load(name)
    record = st.supervisor if st else None
    if record is None or not supervisor.alive(record):
        return None
    progress.step(f"stopping the adapt supervisor (pid {record.pid})")
    if not supervisor.stop(record, grace):
        raise DownIncompleteError(f"down incomplete: the adapt supervisor (pid {record.pid}) still runs after SIGKILL",
                                  f"check it with `ps -p {record.pid}`, then run `clusterctl down` again")
    return StoppedProcess("localhost", "adapt supervisor", record.pid)


def _close_unrecorded_scheduler(inventory: Inventory, hosts: HostGroup, progress: Progress) -> str | None:
    """Without state: a scheduler answering at the inventory's address is asked to close.

    Returns its address when one answered, so that `down` can say it was not found by pid.
    """
    if inventory.security.enabled:
        return None  # its client certificates were in the lost state: it cannot be asked
    expect = scheduler_id_prefix(inventory.name)  # another cluster's scheduler is never closed
    try:
        address = lifecycle.scheduler_endpoint(inventory, hosts).address
        scheduler_api.query(address, timeout=2.0, expect=expect)
    except ClusterctlError:
        return None
    progress.step(f"a scheduler answers at {address}: closing it and its workers")
    try:
        scheduler_api.close(address, expect)
    except (SchedulerUnreachableError, ForeignSchedulerError):
        pass
    return address


def _close_scheduler(st: ClusterState, progress: Progress) -> str | None:
    """Graceful first: ask the scheduler to close, and its workers with it. A note if it can't."""
    progress.step(f"closing the scheduler and its workers at {st.scheduler_address}")
    try:
        # Another cluster's scheduler at our address is never closed: its id is checked on the
        # connection that closes it. A dead one is told within the connect timeout.
        scheduler_api.close(st.scheduler_address, st.expected_scheduler_id(), tls=st.client_tls())
    except (SchedulerUnreachableError, ForeignSchedulerError) as exc:
        return exc.message  # stopping by pid still cleans up
    return None


def _conclude(name: str, st: ClusterState | None, result: DownResult, records: list[ProcessRecord],
              swept: dict[str, list[StopOutcome]], failed: dict[str, HostError]) -> DownResult:
    left: list[ProcessRecord] = [r for r in records if r.host in failed]
    unverified = []
    recorded = {(r.host, r.pid) for r in records}
    for alias, outcomes in swept.items():
        for p in outcomes:
            # Stopped: signalled here, or recorded and gone (many exit when the scheduler closes).
            if p.gone and (p.signalled or (alias, p.pid) in recorded):
                result.stopped.append(StoppedProcess(alias, p.name, p.pid))
            elif not p.gone:
                unverified.append(f"{alias}: {p.name} (pid {p.pid}) still runs after SIGKILL")
                left += [r for r in records if r.host == alias and r.pid == p.pid]
    if result.unrecorded_scheduler and not any(p.role == "scheduler" for found in swept.values() for p in found):
        unverified.append(f"the scheduler at {result.unrecorded_scheduler} answered but no pid file names it "
                        "(was its run directory deleted?); it was asked to close, "
                        "its processes are not verified")
    if not failed and not unverified:
        if st is not None:
            state.remove(name)
        return result
    if st is not None:
        # Keep what could not be verified, and the cluster itself, so a later `down` finishes the job.
        st.processes = left
        state.save(st)
    reasons = [f"{host}: not verified: {error.reason}" for host, error in failed.items()] + unverified
    done = f" (stopped {len(result.stopped)} other process(es))" if result.stopped else ""
    hint = ("fix the host, then run `clusterctl down` again; it stops what is left" if failed or st is not None
            else "check the scheduler host with `ps`")
    raise DownIncompleteError(f"down incomplete: {'; '.join(reasons)}{done}", hint)
