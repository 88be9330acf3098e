"""`clusterctl check CONFIG`: the preflight on its own, every check on every host, nothing started.

Per host, in order (a check that cannot run because an earlier one failed is skipped):

    reachable          the transport connects and authenticates
    python             the host's python runs and imports dask and distributed
    versions           the fingerprint (python major.minor, what distributed compares, `environment:
                       packages`) equals the scheduler host's; this machine differing is a warning
    gpus               (hosts of a worker group with `gpus:`) nvidia-smi, run with that group's env and
                       setup as `up` runs it, lists the GPUs `gpus:` asks for; they are shown
    port_free          (scheduler host) the scheduler port can be bound where `up` would listen
    reaches_scheduler  (worker hosts) a TCP connection to that port succeeds from the host

The last two are one honest experiment, in the same round trip as the versions: the scheduler
host's agent binds the port first and serves it until every worker host connected (or a few seconds
passed), then closes it; each worker host's agent connects to it, trying again while refused (the
listener is bound at the same moment, on another host). One remote command per host. Before a
synced environment exists (`environment: {sync: true}`) the port is checked in rounds of its own: a
listener left in the background, the connections, its stop, verified.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterctl import lifecycle, preflight
from clusterctl.errors import EXIT_FAILED, EXIT_OK, ClusterctlError, HostError
from clusterctl.group import HostGroup, connect, located
from clusterctl.host import Host
from clusterctl.inventory import Inventory, load_inventory
from clusterctl.launch import SchedulerEndpoint, chosen_gpus
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.progress import PasswordPrompt, Progress, SilentProgress
from clusterctl.records import Gpu
from clusterctl.report import JSON_SCHEMA_VERSION

CONNECT_TIMEOUT = 5.0  # seconds for a worker host's TCP connect to the scheduler port
LISTEN_SECONDS = 30.0  # the test listener's own deadline (plus the connect timeout), should clusterctl not stop it
AGENT_MARGIN = 2.0  # seconds an agent may take to start: the listener's and the connects' windows allow for it


@dataclass
class CheckResult:
    """One check on one host: passed (True), failed (False) or skipped (None), and why."""

    name: str
    ok: bool | None
    reason: str | None = None
    hint: str | None = None

    @property
    def status(self) -> str:
        return {True: "ok", False: "failed", None: "skipped"}[self.ok]


@dataclass
class HostCheck:
    host: str
    roles: list[str]
    address: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, CheckResult] = field(default_factory=dict)
    gpus: list[Gpu] | None = None  # what nvidia-smi lists, for a host of a worker group with `gpus:`

    @property
    def ok(self) -> bool:
        return all(result.ok is not False for result in self.checks.values())

    def passed(self, name: str) -> bool:
        result = self.checks.get(name)
        return result is not None and result.ok is True

    def record(self, name: str, ok: bool | None, reason: str | None = None, hint: str | None = None) -> None:
        self.checks[name] = CheckResult(name, ok, reason, hint)


@dataclass
class CheckReport:
    cluster: str
    config: str
    scheduler_host: str
    scheduler_address: str | None  # where `up` would make the scheduler listen; None if unknown
    hosts: list[HostCheck] = field(default_factory=list)
    packages: tuple[str, ...] = preflight.COMPARED  # the fingerprint compared, in column order
    local: dict[str, Any] = field(default_factory=dict)  # this machine's fingerprint
    warnings: list[str] = field(default_factory=list)  # this machine differs from the scheduler host
    show_environment: bool = False  # `check --env`: the hosts x packages matrix

    @property
    def ok(self) -> bool:
        return all(host.ok for host in self.hosts)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    @property
    def failures(self) -> list[tuple[str, CheckResult]]:
        return [(h.host, r) for h in self.hosts for r in h.checks.values() if r.ok is False]

    def document(self) -> dict[str, Any]:
        """The stable `check --json` document (documented in README.md, "check --json")."""
        return {
            "schema": JSON_SCHEMA_VERSION,
            "cluster": self.cluster,
            "config": self.config,
            "ok": self.ok,
            "scheduler": {"host": self.scheduler_host, "address": self.scheduler_address},
            "hosts": [
                {
                    "host": host.host,
                    "roles": host.roles,
                    "address": host.address,
                    "ok": host.ok,
                    "versions": host.versions,
                    "gpus": None if host.gpus is None else [asdict(gpu) for gpu in host.gpus],
                    "checks": {name: {"status": result.status, "reason": result.reason, "hint": result.hint}
                               for name, result in host.checks.items()},
                }
                for host in self.hosts
            ],
            "warnings": self.warnings,
            **({"environment": {"packages": list(self.packages), "this_machine": self.local}}
               if self.show_environment else {}),
        }


def check(config: str, progress: Progress | None = None, connect_timeout: float = CONNECT_TIMEOUT,
          show_environment: bool = False, limit: list[str] | None = None,
          password_prompt: PasswordPrompt | None = None) -> CheckReport:
    """Every check on every host of ``config`` (or those ``limit`` selects); raises only for an invalid
    inventory or a --limit pattern that matches no host."""
    progress = progress or SilentProgress()
    inventory = load_inventory(config)
    scheduler_alias = inventory.scheduler.host
    aliases = list(dict.fromkeys([scheduler_alias, *(group.host for group in inventory.workers)]))
    chosen = limit_hosts(inventory, cluster_hosts(inventory), limit or [])
    # The scheduler's host is asked even when left out: the versions' reference, the port's listener.
    aliases = [alias for alias in aliases if alias in chosen or alias == scheduler_alias]
    rows = {alias: HostCheck(alias, roles=_roles(inventory, alias)) for alias in aliases}
    report = CheckReport(inventory.name, str(Path(config)), scheduler_alias, None, list(rows.values()),
                         packages=preflight.compared(inventory.environment.packages),
                         show_environment=show_environment)
    report.local = preflight.local_versions(report.packages)
    try:
        with connect(inventory, aliases, password_prompt) as hosts:
            progress.step(f"checking {len(hosts)} host(s)")
            probes = {alias: probe for alias, probe in preflight.gpu_probes(inventory).items() if alias in chosen}
            endpoint = lifecycle.scheduler_endpoint(inventory, hosts)
            report.scheduler_address = endpoint.address
            hosts.run(lambda host: _reach(host, rows[host.alias]))  # first: the listener waits for those that are
            window = connect_timeout + AGENT_MARGIN
            serve = {"host": endpoint.listen_host, "port": endpoint.port, "seconds": window + AGENT_MARGIN,
                     "accepts": sum(1 for row in rows.values() if "worker" in row.roles and row.passed("reachable"))}
            # Nothing to reach when the scheduler host is not (its row says why): no worker waits out the window.
            reach = ({"host": endpoint.listen_host, "port": endpoint.port, "timeout": window}
                     if rows[scheduler_alias].passed("reachable") else None)
            ports: dict[str, dict[str, Any]] = {}
            hosts.run(lambda host: _ask(host, rows[host.alias], report.packages, inventory.environment.sync,
                                        probes.get(host.alias), serve if host.alias == scheduler_alias else None,
                                        reach if "worker" in rows[host.alias].roles else None, ports),
                      only=[alias for alias, row in rows.items() if row.passed("reachable")])
            for alias in [alias for alias in probes if alias in rows]:
                _check_gpus(inventory, rows[alias])
            _compare_versions(rows, scheduler_alias, report.packages)
            if rows[scheduler_alias].passed("python") and rows[scheduler_alias].versions:
                report.warnings = preflight.local_warnings(report.local, rows[scheduler_alias].versions,
                                                           f"the scheduler host {scheduler_alias}", report.packages)
            if _asked_in_rounds(rows, ports, scheduler_alias):
                progress.step(f"checking port {inventory.scheduler.port} on {scheduler_alias}")
                _check_port(inventory, hosts, rows, endpoint, connect_timeout)
            else:
                _record_ports(rows, scheduler_alias, endpoint, ports)
    finally:
        progress.done()
    if scheduler_alias not in chosen:
        report.hosts = [row for row in report.hosts if row.host != scheduler_alias]
        report.warnings += [f"the scheduler host {scheduler_alias} (asked, outside --limit): {name}: {result.reason}"
                            for name, result in rows[scheduler_alias].checks.items() if result.ok is False]
    return report


def _roles(inventory: Inventory, alias: str) -> list[str]:
    roles = ["scheduler"] if alias == inventory.scheduler.host else []
    return roles + (["worker"] if any(group.host == alias for group in inventory.workers) else [])


def _reach(host: Host, row: HostCheck) -> None:
    """reachable: the transport connects and authenticates (no command needed)."""
    try:
        host.transport.connect()
    except ClusterctlError as exc:
        exc = located(host, exc)
        row.record("reachable", False, _reason(exc), exc.hint)
        row.record("python", None, "host not reachable")
        return
    row.record("reachable", True)
    row.address = host.address


def _ask(host: Host, row: HostCheck, packages: tuple[str, ...], sync: bool, gpu_probe: dict[str, Any] | None,
         serve: dict[str, Any] | None, reach: dict[str, Any] | None, ports: dict[str, dict[str, Any]]) -> None:
    """python and versions, with ``gpu_probe`` the GPUs (as `up`'s preflight asks), and the port's
    experiment (``serve`` on the scheduler host, ``reach`` on worker hosts, answers into ``ports``)."""
    if sync and not _use_venv(host, row):
        return
    try:
        found, gpus, port = host.check_port([p for p in packages if p not in preflight.COMPARED], gpu_probe,
                                            serve, reach)  # creates nothing there
    except ClusterctlError as exc:
        row.record("python", False, _reason(exc), exc.hint)
        return
    ports[host.alias] = port
    if gpu_probe is not None:
        problem = preflight.gpu_problem(host.alias, gpus)
        if problem is not None:
            row.record("gpus", False, problem.reason, problem.hint)
        else:
            assert isinstance(gpus, list)
            row.gpus = gpus
    row.versions = {package: found.get(package) for package in packages}
    problem = preflight.import_problem(host.alias, found, host.settings.connection == "local")
    if problem is not None:
        row.record("python", False, problem.reason, problem.hint)
    else:
        row.record("python", True)


def _check_gpus(inventory: Inventory, row: HostCheck) -> None:
    """gpus: what nvidia-smi listed holds every GPU the host's worker groups ask for, as `up` plans them."""
    if "gpus" in row.checks:  # failed already: no nvidia-smi, or no GPU
        return
    if row.gpus is None:
        skipped = row.checks.get("versions")  # `environment: {sync: true}` and no venv yet
        row.record("gpus", None, "host not reachable" if not row.passed("reachable") else
                   skipped.reason if skipped is not None else "python did not run")
        return
    for group in inventory.workers:
        if group.host == row.host and group.gpus is not None:
            try:
                chosen_gpus(group, row.gpus)
            except HostError as exc:
                row.record("gpus", False, f"worker group {group.group or group.name}: {exc.reason}", exc.hint)
                return
    row.record("gpus", True)


def _use_venv(host: Host, row: HostCheck) -> bool:
    """`environment: {sync: true}`: the processes will run the venv's python, so that is what is
    checked, once `up` or `sync` made it; before, the host's python need only be able to make it."""
    try:
        found = host.call("sync_prepare", run_dir=host.run_dir, create=False)
    except ClusterctlError as exc:
        row.record("python", False, _reason(exc), exc.hint)
        return False
    if not found.get("can_venv"):
        row.record("python", False, f"{found.get('executable') or host.python} cannot create a venv (no `venv` module)",
                   "install the venv module there (Debian/Ubuntu: python3-venv), or set `python:` to an interpreter "
                   "that can run `python -m venv`")
        return False
    if not found.get("venv_ready"):
        row.record("python", True)
        row.record("versions", None, "not synced yet: `clusterctl sync` (or `up`) installs the environment")
        return False
    host.settings = host.settings.model_copy(update={"python": str(found["venv_python"])})
    return True


def _compare_versions(rows: dict[str, HostCheck], scheduler_alias: str, packages: tuple[str, ...]) -> None:
    reference = rows[scheduler_alias]
    for row in rows.values():
        if "versions" in row.checks:  # decided already (not synced yet)
            continue
        if not reference.versions and reference.passed("python"):
            row.record("versions", None, f"the scheduler host {scheduler_alias} is not synced yet")
        elif not row.passed("python"):
            row.record("versions", None, "python did not run")
        elif not reference.passed("python"):
            row.record("versions", None, f"the scheduler host {scheduler_alias} could not be asked")
        else:
            differing = preflight.differing(row.versions, reference.versions, packages)
            if differing:
                row.record("versions", False, ", ".join(
                    f"{p} {row.versions.get(p)} (scheduler host: {reference.versions.get(p)})" for p in differing),
                    "install the same versions everywhere (or start anyway: `up --allow-version-mismatch`)")
            else:
                row.record("versions", True)


def _asked_in_rounds(rows: dict[str, HostCheck], ports: dict[str, dict[str, Any]], scheduler_alias: str) -> bool:
    """The port is checked in rounds of its own when some host's python runs but no versions call of its
    carried the port's experiment (`environment: {sync: true}` before the venv exists)."""
    if not rows[scheduler_alias].passed("python"):
        return False  # there is no port to check: `_record_ports` says so
    return any(row.passed("python") and row.host not in ports for row in rows.values())


def _record_ports(rows: dict[str, HostCheck], scheduler_alias: str, endpoint: SchedulerEndpoint,
                  ports: dict[str, dict[str, Any]]) -> None:
    """port_free and reaches_scheduler from the answers of the one round trip."""
    scheduler_row = rows[scheduler_alias]
    workers = [row for row in rows.values() if "worker" in row.roles]
    if not scheduler_row.passed("python"):  # its agent closed the port itself: nothing runs there
        _no_port_check(scheduler_row, workers)
        return
    served = ports[scheduler_alias]["serve"]
    if not served["listening"]:
        _port_refused(scheduler_row, workers, scheduler_alias, endpoint.listen_host, endpoint.port, served)
        return
    scheduler_row.record("port_free", True)
    for row in workers:
        if not row.passed("python"):
            row.record("reaches_scheduler", None, "python did not run")
        else:
            _record_reached(row, ports[row.host]["reach"], endpoint.listen_host, endpoint.port)


def _no_port_check(scheduler_row: HostCheck, workers: list[HostCheck]) -> None:
    scheduler_row.record("port_free", None, "python did not run on the scheduler host")
    for row in workers:
        row.record("reaches_scheduler", None, "the scheduler host could not be checked")


def _port_refused(scheduler_row: HostCheck, workers: list[HostCheck], alias: str, listen_host: str, port: int,
                  listening: dict[str, Any]) -> None:
    if listening.get("in_use"):
        scheduler_row.record("port_free", False, f"port {port} is in use on {alias}",
                             "is the cluster already running (`clusterctl status`)? else stop what holds the "
                             "port, or choose another `scheduler.port`")
    else:
        scheduler_row.record("port_free", False, f"cannot listen on {listen_host}:{port}: {listening['error']}",
                             "set the scheduler host's `address:` to one of its own addresses")
    for row in workers:
        row.record("reaches_scheduler", None, f"nothing could listen on port {port}")


def _record_reached(row: HostCheck, answer: dict[str, Any], listen_host: str, port: int) -> None:
    if answer["connected"]:
        row.record("reaches_scheduler", True)
    else:
        where = f"[{listen_host}]:{port}" if ":" in listen_host else f"{listen_host}:{port}"
        row.record("reaches_scheduler", False, f"cannot connect to {where}: {answer['error']}",
                   "open the port in the firewall between them, or set the scheduler host's `address:` to one "
                   "the workers can reach")


def _check_port(inventory: Inventory, hosts: HostGroup, rows: dict[str, HostCheck], endpoint: SchedulerEndpoint,
                connect_timeout: float) -> None:
    """port_free on the scheduler host, then reaches_scheduler from every worker host, in rounds of their
    own: a listener left in the background, the connections, its stop (verified)."""
    scheduler_row = rows[inventory.scheduler.host]
    scheduler = hosts[inventory.scheduler.host]
    workers = [row for row in rows.values() if "worker" in row.roles]
    port, listen_host = inventory.scheduler.port, endpoint.listen_host
    if not scheduler_row.passed("python"):
        _no_port_check(scheduler_row, workers)
        return
    try:
        listening = scheduler.listen(listen_host, port, LISTEN_SECONDS + connect_timeout)
    except ClusterctlError as exc:
        listening = {"listening": False, "error": _reason(exc)}
    if not listening["listening"]:
        _port_refused(scheduler_row, workers, scheduler.alias, listen_host, port, listening)
        return
    scheduler_row.record("port_free", True)
    ready = [row for row in workers if row.passed("python")]
    for row in workers:
        if row not in ready:
            row.record("reaches_scheduler", None, "python did not run")
    try:
        hosts.run(lambda host: _reach_scheduler(host, rows[host.alias], listen_host, port, connect_timeout),
                  only=[row.host for row in ready])
    finally:
        _stop_listener(scheduler, scheduler_row, listening, LISTEN_SECONDS + connect_timeout)


def _reach_scheduler(host: Host, row: HostCheck, listen_host: str, port: int, timeout: float) -> None:
    try:
        answer = host.connect(listen_host, port, timeout)
    except ClusterctlError as exc:
        row.record("reaches_scheduler", False, _reason(exc), exc.hint)
        return
    _record_reached(row, answer, listen_host, port)


def _stop_listener(scheduler: Host, row: HostCheck, listening: dict[str, Any], lifetime: float) -> None:
    """Leave nothing behind: stop the test listener by pid (and start time) and verify it is gone."""
    process = {"pid": listening["pid"], "start_time": listening.get("start_time")}
    try:
        gone = scheduler.stop_listener(process["pid"], process["start_time"])
    except ClusterctlError as exc:
        gone, why = False, _reason(exc)
    else:
        why = "still running after SIGKILL"
    if not gone:
        row.record("port_free", False, f"the test listener (pid {process['pid']}) could not be stopped: {why}",
                   f"it exits by itself within {lifetime:g}s")


def _reason(exc: ClusterctlError) -> str:
    """The message without the ``host:`` prefix the row already shows."""
    return exc.reason if isinstance(exc, HostError) else exc.message
