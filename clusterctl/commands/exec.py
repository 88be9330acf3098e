"""`clusterctl exec -- CMD ARG...`: one command on every host of a cluster, in parallel.

The command is an argv, as typed after ``--``; it crosses the remote shell only inside the SSH
transport, quoted word by word. ``--shell LINE`` runs a shell line instead, which the user asks
for explicitly. Every host answers with its exit code and output, or the error that stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterctl import state
from clusterctl.errors import EXIT_FAILED, EXIT_OK, ClusterctlError, InvalidInputError
from clusterctl.group import connect
from clusterctl.inventory import load_inventory
from clusterctl.limit import cluster_hosts, limit_hosts
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.remote_log import log_command
from clusterctl.report import JSON_SCHEMA_VERSION
from clusterctl.transport import CommandResult

EXEC_TIMEOUT = 300.0


@dataclass
class HostRun:
    host: str
    exit_code: int | None = None  # None: the command did not run (see error)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.exit_code == 0


@dataclass
class ExecResult:
    cluster: str
    argv: list[str]
    hosts: list[HostRun] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if all(run.succeeded for run in self.hosts) else EXIT_FAILED

    def document(self) -> dict[str, Any]:
        return {"schema": JSON_SCHEMA_VERSION, "cluster": self.cluster, "argv": self.argv, "ok": self.exit_code == 0,
                "hosts": [{"host": r.host, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                           "error": r.error} for r in self.hosts]}


def exec_on_hosts(argv: list[str], progress: Progress, cluster: str | None = None, config: str | None = None,
                  limit: list[str] | None = None, timeout: float = EXEC_TIMEOUT,
                  password_prompt: PasswordPrompt | None = None) -> ExecResult:
    if not argv:
        raise InvalidInputError("no command given", "put it after --, e.g. `clusterctl exec -- df -h`, "
                                "or pass --shell 'LINE'")
    if config is not None and cluster is not None:
        raise InvalidInputError("give --cluster NAME or --config FILE, not both")
    if config is not None:
        inventory = load_inventory(config)
        name = inventory.name
        st = state.load(name)
        recorded = [r.host for r in st.processes] if st else []
    else:
        name = state.resolve_name(cluster, None)
        st = state.load(name)
        if st is None:
            raise ClusterctlError(f"cluster {name!r} is not running", "pass its inventory with --config FILE")
        inventory, recorded = st.inventory, [r.host for r in st.processes]
    aliases = limit_hosts(inventory, cluster_hosts(inventory, recorded), limit or [])
    result = ExecResult(name, list(argv))
    progress.step(f"running {argv[0]} on {len(aliases)} host(s)")
    try:
        with connect(inventory, aliases, password_prompt) as hosts:
            def run(alias: str) -> CommandResult:
                log_command(alias, argv)
                return hosts[alias].transport.run(argv, timeout=timeout)

            ran = hosts.run(lambda host: run(host.alias))
    finally:
        progress.done()
    for alias in aliases:
        outcome = ran[alias]
        if outcome.value is not None:
            done = outcome.value
            result.hosts.append(HostRun(alias, done.exit_status, done.stdout, done.stderr))
        else:
            result.hosts.append(HostRun(alias, error=outcome.error.message if outcome.error else f"{alias}: failed"))
    return result
