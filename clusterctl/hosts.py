"""One cluster host as clusterctl drives it: a transport plus the host-side agent.

Every step on a host (start, liveness, stop, versions, log tails, pid-file listing) is one
round trip: the host's python runs ``clusterctl/agent.py`` with a JSON request. The transport
(local or SSH) is opened once per command and reused for every step.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from clusterctl import paths
from clusterctl.errors import HostError
from clusterctl.inventory import HostSettings, Inventory
from clusterctl.launch import ProcessPlan
from clusterctl.remote_log import log_command
from clusterctl.transport import Transport, open_transport

AGENT_MARKER = "CLUSTERCTL-AGENT "
AGENT_TIMEOUT = 60.0


@cache
def agent_source() -> str:
    return (Path(__file__).parent / "agent.py").read_text()


def default_run_dir(cluster: str, settings: HostSettings) -> str:
    if settings.run_dir:
        return settings.run_dir
    if settings.connection == "local":
        return str(paths.home() / "clusters" / cluster / "run")
    return f"~/.clusterctl/{cluster}"


class Host:
    """A host of one cluster: where its run directory is and how to ask its agent."""

    def __init__(self, alias: str, settings: HostSettings, cluster: str, transport: Transport) -> None:
        self.alias = alias
        self.settings = settings
        self.transport = transport
        self.run_dir = default_run_dir(cluster, settings)

    @property
    def address(self) -> str:
        return self.transport.address

    def agent_argv(self) -> list[str]:
        """The argv that runs the agent: the host's setup lines first, when it has any.

        The request goes to the agent's stdin, not its argv: env values may be secrets, and
        a command line is visible to every user of the host (ps, /proc/<pid>/cmdline).
        """
        python = self.settings.python or "python3"
        argv = [python, "-c", agent_source()]
        if not self.settings.setup:
            return argv
        script = "set -e\n" + "\n".join(self.settings.setup) + '\nexec "$@"'
        return ["/bin/sh", "-c", script, "clusterctl-agent", *argv]

    def call(self, op: str, timeout: float = AGENT_TIMEOUT, **request: Any) -> dict[str, Any]:
        argv, payload = self.agent_argv(), json.dumps({"op": op, **request})
        log_command(self.alias, argv, payload)  # `clusterctl -v`
        result = self.transport.run(argv, stdin=payload.encode(), timeout=timeout)
        for line in result.stdout.splitlines():
            if line.startswith(AGENT_MARKER):
                return json.loads(line[len(AGENT_MARKER):])
        python = self.settings.python or "python3"
        if result.exit_status == 127:
            raise HostError(self.alias, f"{python}: command not found",
                            "set `python:` for this host to an interpreter that has dask and distributed")
        detail = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"])[-1]
        if self.settings.setup and result.exit_status != 0:
            raise HostError(self.alias, f"setup lines or {python} failed (exit {result.exit_status}): {detail}",
                            "check the host's `setup:` lines and `python:`")
        raise HostError(self.alias, f"{python} failed (exit {result.exit_status}): {detail}",
                        "check that `python:` names a working Python 3.8+ interpreter")

    def start(self, plans: list[ProcessPlan]) -> list[dict[str, Any]]:
        """Start processes detached; returns per process ``{name, pid, start_time, log}`` or an error."""
        processes = [
            {"name": p.name, "role": p.role, "argv": p.argv, "env": p.env, "setup": p.setup,
             "worker_names": p.worker_names}
            for p in plans
        ]
        return self.call("start", run_dir=self.run_dir, processes=processes)["processes"]

    def alive(self, processes: list[dict[str, Any]]) -> dict[int, bool]:
        answer = self.call("alive", processes=[{"pid": p["pid"], "start_time": p.get("start_time")} for p in processes])
        return {p["pid"]: p["alive"] for p in answer["processes"]}

    def stop(self, processes: list[dict[str, Any]], grace: float) -> dict[int, bool]:
        """SIGTERM each process group, SIGKILL after ``grace`` seconds; returns pid -> verified gone."""
        return {p["pid"]: p["gone"] for p in self.sweep(processes, grace, include_pid_files=False)}

    def sweep(self, processes: list[dict[str, Any]], grace: float, include_pid_files: bool = True) -> list[dict[str, Any]]:
        """Stop ``processes`` and, with ``include_pid_files``, whatever the run directory's pid files
        name; returns each process's record with ``gone`` (verified) added."""
        request = [{"name": p["name"], "role": p.get("role"), "pid": p["pid"], "start_time": p.get("start_time"),
                    "log": p.get("log"), "pid_file": f"{self.run_dir}/{p['name']}.pid"} for p in processes]
        answer = self.call("stop", timeout=grace + AGENT_TIMEOUT, processes=request, grace=grace,
                           run_dir=self.run_dir if include_pid_files else None)
        return answer["processes"]

    def listing(self) -> list[dict[str, Any]]:
        """What the pid files in this host's run directory say runs here."""
        return self.call("list", run_dir=self.run_dir)["processes"]

    def versions(self) -> dict[str, Any]:
        return self.call("versions")

    def upload(self, files: dict[str, bytes]) -> None:
        """Private files (0600) into the run directory (made 0700, with tls/): ``{"tls/ca.pem": data}``."""
        self.call("prepare", run_dir=self.run_dir)
        for relative, data in files.items():
            self.transport.put_file(f"{self.run_dir}/{relative}", data, 0o600)

    def tail(self, path: str, lines: int = 20) -> str:
        return self.call("tail", path=path, lines=lines).get("text", "")

    def describe_start(self, plans: list[ProcessPlan]) -> list[str]:
        """The shell-equivalent command lines ``up --dry-run`` shows for this host."""
        lines = []
        for p in plans:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in p.env.items())
            setup = "".join(f"{line}; " for line in [*self.settings.setup, *p.setup])
            log = f"{self.run_dir}/{p.name}.log"
            lines.append(f"{setup}{'env ' + env + ' ' if env else ''}setsid {shlex.join(p.argv)} "
                         f"</dev/null >>{shlex.quote(log)} 2>&1 &")
        return lines


@contextmanager
def connect(inventory: Inventory, aliases: list[str],
            password_prompt: Callable[[str], str] | None = None) -> Iterator[dict[str, Host]]:
    """Hosts for ``aliases``, each with one lazily connecting transport, all closed on exit."""
    hosts: dict[str, Host] = {}
    try:
        for alias in dict.fromkeys(aliases):
            settings = inventory.host(alias)
            hosts[alias] = Host(alias, settings, inventory.name, open_transport(alias, settings, password_prompt))
        yield hosts
    finally:
        for host in hosts.values():
            host.transport.close()
