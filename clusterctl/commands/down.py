"""`clusterctl down`: retire through the scheduler, stop every process by pid, verify, forget.

Processes are found twice over: in the local state, and in the pid files of each host's run
directory. So `down CONFIG` works with no local state at all (another machine, a deleted
~/.clusterctl), and a process whose pid never reached the state (an interrupted `up`) is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterctl import scheduler_api, state
from clusterctl.commands._common import Progress
from clusterctl.errors import ClusterctlError, SchedulerUnreachableError
from clusterctl.fanout import fan_out
from clusterctl.hosts import Host, connect
from clusterctl.inventory import Inventory, load_inventory
from clusterctl.launch import scheduler_address
from clusterctl.state import ClusterState, ProcessRecord

DEFAULT_GRACE = 10.0


@dataclass
class DownResult:
    cluster: str
    stopped: list[str] = field(default_factory=list)  # "<host>: <name> (pid N)"
    already_gone: bool = False
    scheduler_note: str | None = None
    without_state: bool = False
    notes: list[str] = field(default_factory=list)
    unrecorded_scheduler: str | None = None  # without state: a scheduler answered there, found by no pid file


class DownIncompleteError(ClusterctlError):
    pass


def down(progress: Progress, cluster: str | None = None, config: str | None = None,
         grace: float = DEFAULT_GRACE) -> DownResult:
    if cluster is None and config is None and state.current() is None:
        return DownResult("(none)", already_gone=True)  # nothing is current: down is harmless
    inventory = load_inventory(config) if config else None
    name = state.resolve_name(cluster, None) if cluster or not inventory else inventory.name
    with state.locked(name):
        st = state.load(name)
        if st is None and inventory is None:
            return DownResult(name, already_gone=True)
        result = DownResult(name, without_state=st is None)
        if st is not None:
            inventory = st.model()
            if st.process("scheduler") is not None:
                result.scheduler_note = _retire_and_close(st, progress)
        assert inventory is not None
        records = st.processes if st else []
        used = [inventory.scheduler.host, *(g.host for g in inventory.workers), *(r.host for r in records)]
        # Without state, any host of the inventory may hold a worker that add-worker put there.
        spare = [alias for alias in inventory.hosts if alias not in used] if st is None else []
        aliases = list(dict.fromkeys(used + spare))
        progress.step(f"stopping the processes on {len(aliases)} host(s) and verifying they are gone")
        with connect(inventory, aliases, progress.password) as hosts:
            if st is None:
                result.unrecorded_scheduler = _close_unrecorded_scheduler(inventory, hosts, progress)
            outcomes = fan_out(aliases, lambda alias: hosts[alias].sweep(
                [vars(r) for r in records if r.host == alias], grace))
        progress.done()
        unreachable_spares = [o for o in outcomes if o.host in spare and not o.succeeded]
        result.notes += [f"{o.host}: not checked ({o.error.message if o.error else 'unreachable'}); it runs no "
                         "process of the inventory" for o in unreachable_spares]
        outcomes = [o for o in outcomes if o not in unreachable_spares]
        return _conclude(name, st, result, records, outcomes)


def _close_unrecorded_scheduler(inventory: Inventory, hosts: dict[str, Host], progress: Progress) -> str | None:
    """Without state: a scheduler answering at the inventory's address is asked to close.

    Returns its address when one answered, so that `down` can say it was not found by pid.
    """
    from clusterctl.commands.up import scheduler_listen_host

    if inventory.security.enabled:
        return None  # its client certificates were in the lost state: it cannot be asked
    try:
        address = scheduler_address(scheduler_listen_host(inventory, hosts), inventory.scheduler.port)
        scheduler_api.query(address, timeout=2.0)
    except ClusterctlError:
        return None
    progress.step(f"a scheduler answers at {address}: retiring its workers and closing it")
    try:
        scheduler_api.retire_and_close(address)
    except SchedulerUnreachableError:
        pass
    return address


def _retire_and_close(st: ClusterState, progress: Progress) -> str | None:
    """Graceful first: ask the scheduler to retire the workers and close. A note if it can't."""
    progress.step(f"retiring workers and closing the scheduler at {st.scheduler_address}")
    try:
        # A quick question first: a dead scheduler would make the retire call wait out its timeout.
        scheduler_api.query(st.scheduler_address, timeout=2.0, tls=st.client_tls())
        scheduler_api.retire_and_close(st.scheduler_address, tls=st.client_tls())
    except SchedulerUnreachableError as exc:
        return exc.message  # stopping by pid still cleans up
    return None


def _conclude(name: str, st: ClusterState | None, result: DownResult, records: list[ProcessRecord],
              outcomes: list) -> DownResult:
    failed = {o.host: o.error for o in outcomes if not o.succeeded}
    left: list[ProcessRecord] = [r for r in records if r.host in failed]
    unverified = []
    recorded = {(r.host, r.pid) for r in records}
    for outcome in outcomes:
        for p in outcome.value or []:
            # Stopped: signalled here, or recorded and gone (many exit when the scheduler closes).
            if p["gone"] and (p.get("signalled") or (outcome.host, p["pid"]) in recorded):
                result.stopped.append(f"{outcome.host}: {p['name']} (pid {p['pid']})")
            elif not p["gone"]:
                unverified.append(f"{outcome.host}: {p['name']} (pid {p['pid']}) still runs after SIGKILL")
                left += [r for r in records if r.host == outcome.host and r.pid == p["pid"]]
    if result.unrecorded_scheduler and not any(
            p.get("role") == "scheduler" for o in outcomes for p in (o.value or [])):
        unverified.append(f"the scheduler at {result.unrecorded_scheduler} answered but no pid file names it "
                        "(was its run directory under a deleted $CLUSTERCTL_HOME?); it was asked to close, "
                        "its processes are not verified")
    if not failed and not unverified:
        if st is not None:
            state.remove(name)
        return result
    if st is not None:
        # Keep what could not be verified, and the cluster itself, so a later `down` finishes the job.
        st.processes = left
        state.save(st)
    reasons = [f"{host}: not verified: {error.reason if hasattr(error, 'reason') else error}"
               for host, error in failed.items()] + unverified
    done = f" (stopped {len(result.stopped)} other process(es))" if result.stopped else ""
    hint = ("fix the host, then run `clusterctl down` again; it stops what is left" if failed or st is not None
            else "check the scheduler host with `ps`; for `connection: local` hosts, set `run_dir` outside "
                 "$CLUSTERCTL_HOME so that their pid files outlive it")
    raise DownIncompleteError(f"down incomplete: {'; '.join(reasons)}{done}", hint)
