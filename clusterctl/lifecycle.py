"""Processes on hosts: where the scheduler listens, TLS files, start and wait, undo, stop.

`up` and `add-worker` start through ``start_and_wait`` (one path for the scheduler and for
workers): every plan is started on its host at once, recorded as soon as its pid is known, and
awaited by asking the scheduler, never by reading logs. A failure names the host, the process
and the root cause from its log, and undoes what the attempt started.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from clusterctl import scheduler_api, state, tls
from clusterctl.errors import ClusterctlError, ForeignSchedulerError, HostError, SchedulerUnreachableError
from clusterctl.group import HostGroup, connect
from clusterctl.host import WATCH_TAIL_LINES, ExitWatch, Host, close_all
from clusterctl.inventory import Inventory, TlsFilesSpec, select_hosts
from clusterctl.launch import ProcessPlan, SchedulerEndpoint
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.records import ProcessRecord, StartFailure, StoppedProcess
from clusterctl.scheduler_api import SchedulerView
from clusterctl.state import ClusterState
from clusterctl.timing import DOWN_GRACE, RESTART_GRACE
from clusterctl.tls import TlsFiles

T = TypeVar("T")
LOG_TAIL_LINES = 15  # shown to the user
LOG_SCAN_LINES = WATCH_TAIL_LINES  # searched for the root cause
WATCH_MARGIN = 30.0  # seconds an agent watches beyond the start's timeout, should the controller vanish
# Root causes that dask logs well above its final "failed to start" line.
ROOT_CAUSES = ("Address already in use", "No module named", "Permission denied", "Cannot assign requested address",
               "command not found", "No such file or directory", "certificate verify failed")


# --- where the scheduler listens, and TLS -----------------------------------------------------------


def scheduler_endpoint(inventory: Inventory, hosts: HostGroup) -> SchedulerEndpoint:
    """Where the scheduler listens: its host's address, loopback when every host is this machine."""
    if all(host.settings.connection == "local" for host in hosts.values()):
        listen_host = inventory.host(inventory.scheduler.host).address or "127.0.0.1"
    else:
        listen_host = hosts[inventory.scheduler.host].address
    return SchedulerEndpoint(listen_host, inventory.scheduler.port, "tls" if inventory.security.enabled else "tcp")


def tls_dirs(hosts: HostGroup, enabled: bool, resolve: bool = True) -> dict[str, str] | None:
    """Each host's run directory, absolute on that host, where its TLS files go; None when TLS is off."""
    if not enabled:
        return None
    if not resolve:  # `up --dry-run` shows the paths as configured, without asking the hosts
        return {alias: hosts[alias].run_dir for alias in hosts}
    return hosts.run(lambda host: host.absolute_run_dir()).values_or_raise("finding the run directories")


def provision_tls(inventory: Inventory, hosts: HostGroup, endpoint: SchedulerEndpoint) -> None:
    """Make (or adopt) the cluster's TLS files here, and copy each host the ones its processes need."""
    directory = state.tls_dir(inventory.name)
    state.cluster_dir(inventory.name).mkdir(mode=0o700, parents=True, exist_ok=True)
    spec = inventory.security.tls
    if isinstance(spec, TlsFilesSpec):
        tls.adopt(directory, spec.ca_file, spec.cert, spec.key)
    else:
        tls.generate(directory, inventory.name, [endpoint.listen_host, hosts[inventory.scheduler.host].address])
    roles: dict[str, set[str]] = {inventory.scheduler.host: {"scheduler"}}
    for group in inventory.workers:
        roles.setdefault(group.host, set()).add("worker")
    for alias in select_hosts(inventory, inventory.elastic.hosts) if inventory.elastic else []:
        roles.setdefault(alias, set()).add("worker")  # where `scale` and `adapt` may start workers
    hosts.run(lambda host: upload_tls(host, directory, roles[host.alias]), only=roles).values_or_raise(
        "copying TLS files")


def upload_tls(host: Host, directory: Path, roles: set[str]) -> None:
    files = {"tls/ca.pem": (directory / "ca.pem").read_bytes()}
    for role in roles:
        local = tls.local_files(directory, role)
        files[f"tls/{role}.pem"] = Path(local.cert).read_bytes()
        files[f"tls/{role}-key.pem"] = Path(local.key).read_bytes()
    host.upload(files)


def refuse_taken_scheduler_port(hosts: HostGroup, inventory: Inventory, endpoint: SchedulerEndpoint,
                                client_tls: TlsFiles | None, early: bool = False) -> None:
    """Before anything starts: the scheduler's port must be free on its host (as `check` proves it).

    A scheduler started on a taken port dies at once, and workers started with it would join
    whatever listens there, another cluster's scheduler included.
    """
    host = hosts[inventory.scheduler.host]
    try:
        # Through the group: a host that cannot be reached is named as everywhere else (its inventory line).
        answer = hosts.run(lambda h: h.call("listen", host=endpoint.listen_host, port=endpoint.port, seconds=0),
                           only=[host.alias]).values_or_raise("checking the scheduler port")[host.alias]
    except ClusterctlError:
        if early:
            return  # the preflight that follows says what is wrong with the host, with the other hosts'
        raise
    refuse_taken_port(host.alias, endpoint, answer, client_tls)


def refuse_taken_port(alias: str, endpoint: SchedulerEndpoint, answer: dict[str, Any],
                      client_tls: TlsFiles | None) -> None:
    """Raise, naming who holds it if a scheduler does, unless ``answer`` (the agent's ``listen`` with
    ``seconds=0``) says the scheduler's port is free on its host ``alias``."""
    if answer.get("listening"):
        return  # seconds=0: the agent only bound the port and closed it again
    if not answer.get("in_use"):
        raise HostError(alias, f"cannot listen on {endpoint.listen_host}:{endpoint.port}: {answer.get('error')}",
                        "set the scheduler host's `address:` to one of its own addresses")
    try:
        # Without our client certificates (a new cluster), ask in plain TCP: who holds the port is what matters.
        ask = endpoint.address if client_tls is not None else SchedulerEndpoint(endpoint.listen_host, endpoint.port).address
        holder = scheduler_api.owner_of(scheduler_api.query(ask, timeout=2.0, tls=client_tls).scheduler_id)
        owner = f": {holder} listens there" + (" (another cluster)" if holder.startswith("cluster ") else "")
    except ClusterctlError:
        owner = ""
    raise HostError(alias, f"the scheduler port {endpoint.port} is in use on {alias}{owner}; nothing "
                    "was started", "stop what holds the port, or set another `scheduler.port` in the inventory")


# --- start, wait, undo --------------------------------------------------------------------------


def start_processes(hosts: HostGroup, plans: list[ProcessPlan], progress: Progress,
                    st: ClusterState, started: list[ProcessRecord],
                    added: dict[str, dict[str, Any]] | None = None, watches: list[ExitWatch] | None = None,
                    watch_seconds: float = 0.0) -> None:
    """Start every plan on its host, all hosts at once, recording each pid in ``st`` and ``started``.

    ``added`` maps the names of groups that `add-worker` added (not the inventory) to their
    settings, so that `up` can start them again. Whatever did start is recorded before any
    failure is raised, so that nothing started becomes unreachable to `down`. Given ``watches``,
    each host's agent stays attached (up to ``watch_seconds``) to report an exit: one remote
    command per host both starts and watches.
    """
    progress.step(f"starting {len(plans)} process(es) on {len({p.host for p in plans})} host(s)")

    def start(host: Host, mine: list[ProcessPlan]) -> list[ProcessRecord | StartFailure]:
        if watches is None:
            return host.start(mine)
        records, watch = host.start_watched(mine, watch_seconds)
        watches.append(watch)  # list.append is atomic: safe from the group's threads
        return records

    results, interrupted = finish_despite_interrupt(
        lambda: hosts.run_each(plans, lambda host, mine: _start_shown(host, mine, progress, start)))
    failures: list[str] = []
    for outcome in results.succeeded.values():
        for item in outcome:
            if isinstance(item, StartFailure):
                failures.append(f"{next(p for p in plans if p.name == item.name).host}: {item.name}: {item.error}")
                continue
            if added and item.name in added:
                item.added, item.spec = True, added[item.name]
            started.append(item)
            st.processes.append(item)
    state.save(st)
    if interrupted is not None:
        raise interrupted  # only now: everything that started is recorded, and the undo sees it
    results.values_or_raise("start")
    if failures:
        raise ClusterctlError("; ".join(failures), "set `python:` for that host to an interpreter that exists")


def _start_shown(host: Host, plans: list[ProcessPlan], progress: Progress,
                 start: Callable[[Host, list[ProcessPlan]], list[ProcessRecord | StartFailure]]
                 ) -> list[ProcessRecord | StartFailure]:
    """``start(host, plans)``, its row shown started (or failed, with the reason) as soon as that host answers."""
    try:
        outcome = start(host, plans)
    except ClusterctlError as exc:
        progress.host(host.alias, "failed", exc.reason if isinstance(exc, HostError) else exc.message)
        raise
    refused = [item for item in outcome if isinstance(item, StartFailure)]
    progress.host(host.alias, "failed" if refused else "started",
                  "; ".join(f"{item.name}: {item.error}" for item in refused) or f"{len(outcome)} process(es)")
    return outcome


def finish_despite_interrupt(call: Callable[[], T]) -> tuple[T, KeyboardInterrupt | None]:
    """Run ``call`` to its end even when Ctrl-C comes meanwhile; return its value and the interrupt.

    Starting a process and recording its pid are one step: an interrupt in between would leave a
    process that outlives us with no record (`down` could not find it).
    """
    interrupted: KeyboardInterrupt | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="start") as pool:
        future = pool.submit(call)
        while True:
            try:
                return future.result(), interrupted
            except KeyboardInterrupt as exc:
                interrupted = exc


def start_and_wait(st: ClusterState, hosts: HostGroup, plans: list[ProcessPlan], names: list[str],
                   timeout: float, progress: Progress,
                   added: dict[str, dict[str, Any]] | None = None) -> tuple[SchedulerView, list[ProcessRecord]]:
    """Start ``plans`` and wait until the scheduler reports every worker in ``names``.

    Each process is recorded in the state as soon as its pid is known. On any failure or
    interrupt, what this call started is stopped again before the error goes up.
    """
    started: list[ProcessRecord] = []
    watches: list[ExitWatch] = []
    try:
        try:
            if plans:
                start_processes(hosts, plans, progress, st, started, added, watches, timeout + WATCH_MARGIN)
            progress.step(f"waiting for the scheduler and {len(names)} worker(s)")
            view = wait_until_ready(st, hosts, started, names, timeout, progress, watches)
        finally:
            # before any undo: the agents must not report the processes it stops
            close_all([watch.close for watch in watches])
    except BaseException as exc:
        if isinstance(exc, HostError):
            progress.host(exc.host, "failed", exc.reason)
        undo_start(st, hosts, plans, started, progress)
        raise
    finally:
        progress.done()
    return view, started


def wait_until_ready(st: ClusterState, hosts: HostGroup, watch: list[ProcessRecord], names: list[str],
                     timeout: float, progress: Progress, watches: list[ExitWatch]) -> SchedulerView:
    """Wait until the scheduler reports every name; fail fast, with the log tail, if a process dies.

    Liveness costs no remote command: the agents that started the processes stay attached and
    report an exit (with the log's tail) as it happens; the scheduler's answers show the rest.
    """
    waiting_on: dict[str, set[str]] = {}  # host -> its workers the scheduler must report: shown per host
    for record in watch:
        waiting_on.setdefault(record.host, set()).update(set(record.worker_names) & set(names))

    def on_poll(view: SchedulerView | None) -> None:
        progress.waiting(sorted(view.names() & set(names)) if view else [], names)
        if view is not None:
            for alias, workers in [(a, w) for a, w in waiting_on.items() if w <= view.names()]:
                progress.host(alias, "registered", f"{len(workers)} worker(s)" if workers else "scheduler answers")
                del waiting_on[alias]
        for exited in (item for w in watches for item in w.exits()):
            record = next((r for r in watch if r.host == exited.host and r.pid == exited.pid), None)
            if record is not None:
                raise start_failure(hosts, record, "exited during start-up", tail=exited.tail)

    # Every answer must come from our own scheduler: a worker that registers with another
    # cluster's (which holds our address) is a failed start.
    view = scheduler_api.wait_for_workers(st.scheduler_address, set(names), timeout, on_poll, st.client_tls(),
                                          expect=st.expected_scheduler_id())
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


def find_dead(hosts: HostGroup, records: list[ProcessRecord]) -> list[ProcessRecord]:
    """The records whose process is gone, on the hosts that could be asked."""
    alive = hosts.run_each(records, lambda host, mine: host.alive(mine)).succeeded
    return [r for r in records if r.host in alive and not alive[r.host].get(r.pid, False)]


def start_failure(hosts: HostGroup, record: ProcessRecord, what: str, tail: str | None = None) -> HostError:
    """``<host>: worker gpu2 (pid 123) exited during start-up: <root cause>``, with the tail of its log
    (read from the host unless the ``tail`` is at hand)."""
    if tail is None:
        try:
            tail = hosts[record.host].tail(record.log, LOG_SCAN_LINES)
        except ClusterctlError as exc:
            tail = f"(could not read {record.log}: {exc.message})"
    reason = reason_from_log(tail)
    tail = "\n".join(tail.splitlines()[-LOG_TAIL_LINES:])
    message = f"{record.role} {record.name} (pid {record.pid}) {what}" + (f": {reason}" if reason else "")
    return HostError(record.host, message, f"full log: {record.log} on {record.host}",
                     details=f"last lines of {record.log}:\n{tail}" if tail else None)


def reason_from_log(tail: str) -> str:
    """The most telling line of a log tail: a known root cause, else the last error line."""
    lines = tail.splitlines()
    for line in reversed(lines):
        if any(cause in line for cause in ROOT_CAUSES):
            return line.strip()[:200]
    for line in reversed(lines):
        text = line.strip()
        if text and any(word in text for word in ("Error", "error:", "Exception")):
            return text[:200]
    return ""


def undo_start(st: ClusterState, hosts: HostGroup, plans: list[ProcessPlan], started: list[ProcessRecord],
               progress: Progress) -> None:
    """A failed or interrupted start stops what it started, so nothing is left half-started.

    Besides the processes it recorded, it looks for pid files of the processes it meant to start:
    an interrupt can land after a host started a process but before its pid came back.
    """
    names = {(plan.host, plan.name) for plan in plans}
    victims = list(started)
    known = {(r.host, r.pid) for r in started}
    listed = hosts.run(lambda host: host.listing(), only=[plan.host for plan in plans]).succeeded
    for alias, found in listed.items():  # a host that cannot be asked now is swept by `down`
        victims += [f.record(alias) for f in found
                    if (alias, f.name) in names and f.alive and (alias, f.pid) not in known]
    if victims:
        progress.step(f"stopping the {len(victims)} process(es) this attempt started")
        gone = verified_gone(stop_records(hosts, victims, RESTART_GRACE))
        st.processes = [r for r in st.processes if (r.host, r.pid) not in gone]
    if st.processes:
        state.save(st)
    else:
        state.remove(st.name)


# --- stop --------------------------------------------------------------------------------------------


def stop_records(hosts: HostGroup, records: list[ProcessRecord], grace: float) -> dict[str, dict[int, bool] | None]:
    """Stop processes by pid on their hosts, all hosts at once: host -> (pid -> verified gone),
    None for a host that could not be asked."""
    results = hosts.run_each(records, lambda host, mine: host.stop(mine, grace))
    return {alias: result.value for alias, result in results.items()}


def verified_gone(outcomes: dict[str, dict[int, bool] | None]) -> set[tuple[str, int]]:
    """(host, pid) of every process that ``stop_records`` verified gone."""
    return {(alias, pid) for alias, gone in outcomes.items() if gone for pid, ok in gone.items() if ok}


def retire_and_stop(st: ClusterState, workers: set[str], scheduler_answers: bool, progress: Progress,
                    password_prompt: PasswordPrompt | None = None,
                    retry: str = "clusterctl remove-worker", grace: float = DOWN_GRACE,
                    ) -> tuple[list[StoppedProcess], str | None]:
    """Retire ``workers`` through the scheduler (their data moves first), then stop, by pid, each
    worker process none of whose workers is left, verify, and update the state.

    Returns the processes stopped and a note when retiring was not
    possible; raises when a process could not be verified gone (it stays in the state).
    """
    note = None
    if scheduler_answers:
        progress.step(f"retiring {', '.join(sorted(workers))} (moving their data to other workers)")
        try:
            scheduler_api.retire(st.scheduler_address, sorted(workers), st.expected_scheduler_id(),
                                 tls=st.client_tls())
        except (SchedulerUnreachableError, ForeignSchedulerError) as exc:
            note = exc.message
    else:
        note = f"scheduler at {st.scheduler_address} does not answer: stopped without retiring"
    emptied = [r for r in st.processes if r.role == "worker" and r.worker_names and set(r.worker_names) <= workers]
    stopped: list[StoppedProcess] = []
    stuck: list[ProcessRecord] = []
    if emptied:
        progress.step(f"stopping {len(emptied)} process(es)")
        with connect(st.inventory, [r.host for r in emptied], password_prompt) as hosts:
            gone = verified_gone(stop_records(hosts, emptied, grace))
        progress.done()
        stopped = [StoppedProcess(r.host, r.name, r.pid) for r in emptied if (r.host, r.pid) in gone]
        stuck = [r for r in emptied if (r.host, r.pid) not in gone]
    for record in st.processes:
        if record not in stuck:
            record.worker_names = [w for w in record.worker_names if w not in workers]
    st.processes = [r for r in st.processes if r.role != "worker" or r.worker_names or r in stuck]
    state.save(st)
    if stuck:
        failures = ", ".join(f"{r.host}: {r.name} (pid {r.pid})" for r in stuck)
        raise ClusterctlError(f"could not verify that {failures} stopped", f"check the host, then run `{retry}` again")
    return stopped, note
