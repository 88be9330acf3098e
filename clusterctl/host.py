"""One cluster host as clusterctl drives it: a transport plus the host-side agent.

Every step on a host (start, liveness, stop, versions, log reads, pid-file listing) is one
round trip: the host's python runs ``clusterctl/agent.py`` with a JSON request on stdin. This is
where a process is started on a host, and the one place where the agent's answers are checked
and turned into typed records (``clusterctl.records``); an answer of the wrong shape is a
``HostError`` for this host alone.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from clusterctl import agent
from clusterctl.errors import HostError
from clusterctl.inventory import HostSettings, default_python
from clusterctl.launch import ProcessPlan
from clusterctl.records import (
    AnswerError,
    FoundProcess,
    Gpu,
    ProcessRecord,
    StartFailure,
    StopOutcome,
    addresses_of,
    connected_of,
    field_of,
    gpus_of,
    list_of,
    listener_of,
    listening_of,
    pid_of,
    versions_of,
)
from clusterctl.remote_log import AGENT_PLACEHOLDER, log_command, log_more, mask
from clusterctl.transport import CommandResult, Transport
from clusterctl.transport.base import CommandStream

AGENT_MARKER = "CLUSTERCTL-AGENT "
AGENT_TIMEOUT = 60.0  # seconds for one agent round trip (a stop adds its grace period)
EXIT_MARKER = "CLUSTERCTL-EXIT "
WATCH_TAIL_LINES = 200  # of an exited process's log, sent with the news (searched for the root cause)


@cache
def agent_source() -> str:
    return Path(agent.__file__).read_text()


def default_run_dir(cluster: str, settings: HostSettings) -> str:
    """The same default for local and remote hosts: outside $CLUSTERCTL_HOME, so that deleting the
    local state never loses the pid files `down CONFIG` finds processes by."""
    return settings.run_dir or f"~/.clusterctl/{cluster}"


def _agent_request(plan: ProcessPlan) -> dict[str, Any]:
    """What the agent's ``start`` receives for one process: the description it executes."""
    return {"name": plan.name, "role": plan.role, "argv": plan.argv, "env": plan.env, "setup": plan.setup,
            "worker_names": plan.worker_names}


@dataclass(frozen=True)
class ProcessExit:
    """A watched process that exited: which, its exit status, and the tail of its log."""

    host: str
    pid: int
    status: int | None
    tail: str


def close_all(closers: list[Callable[[], None]]) -> None:
    """Call every ``close`` at once: each may wait (up to its bound) for its host's agent to end, and a
    host cut off must not make the others wait in turn."""
    if len(closers) < 2:
        for close in closers:
            close()
        return
    with ThreadPoolExecutor(max_workers=min(32, len(closers)), thread_name_prefix="close") as pool:
        list(pool.map(lambda close: close(), closers))


class ExitWatch:
    """An agent left attached after a start: the exits it reports, until ``close``."""

    def __init__(self, host: str, stream: CommandStream) -> None:
        self.host = host
        self._stream = stream

    def exits(self) -> list[ProcessExit]:
        """What it reported since the last call, without waiting; a malformed line is skipped."""
        found = []
        while (line := self._stream.readline(0)):
            if not line.startswith(EXIT_MARKER):
                continue
            try:
                item = json.loads(line[len(EXIT_MARKER):])
                found.append(ProcessExit(self.host, pid_of(item), item.get("exited") if isinstance(
                    item.get("exited"), int) else None, field_of(item, "tail", str, optional=True) or ""))
            except (ValueError, RecursionError, AnswerError, AttributeError):
                continue
        return found

    def close(self) -> None:
        self._stream.close()


class Host:
    """A host of one cluster: where its run directory is and how to ask its agent."""

    def __init__(self, alias: str, settings: HostSettings, cluster: str, transport: Transport) -> None:
        self.alias = alias
        self.settings = settings
        self.transport = transport
        self.run_dir = default_run_dir(cluster, settings)
        self._absolute_run_dir: str | None = None
        self.where: str | None = None  # the inventory line that names the host, when known
        # `up`: the agent of the next call (its check) stays, waiting for the start (one remote command)
        self.hold_agent = False
        self._held: CommandStream | None = None

    @property
    def address(self) -> str:
        return self.transport.address

    @property
    def python(self) -> str:
        return self.settings.python or default_python(self.settings)

    def absolute_run_dir(self) -> str:
        """The run directory as an absolute path on the host, asked of the host once.

        Paths in a process's argv (TLS files) never pass a shell there, so a `~` must be
        resolved by the host itself before it reaches them.
        """
        if self._absolute_run_dir is None:
            answer = self.call("expand", path=self.run_dir)
            path = self._checked("expand", lambda: field_of(answer, "path", str))
            if not path.startswith("/"):
                raise HostError(self.alias, f"run_dir {self.run_dir!r} is not absolute on the host ({path!r})",
                                "set `run_dir:` for this host to an absolute path")
            self._absolute_run_dir = path
        return self._absolute_run_dir

    def agent_argv(self) -> list[str]:
        """The argv that runs the agent: the host's setup lines first, when it has any.

        The request goes to the agent's stdin, not its argv: env values may be secrets, and
        a command line is visible to every user of the host (ps, /proc/<pid>/cmdline).
        """
        argv = [self.python, "-c", agent_source()]
        if not self.settings.setup:
            return argv
        script = "set -e\n" + "\n".join(self.settings.setup) + '\nexec "$@"'
        return ["/bin/sh", "-c", script, "clusterctl-agent", *argv]

    def call(self, op: str, timeout: float = AGENT_TIMEOUT, **request: Any) -> dict[str, Any]:
        """One agent round trip: the answer object, or a ``HostError`` saying what went wrong.

        With ``hold_agent`` (it holds for this one call), the agent stays waiting for one more request
        on the same command: ``start_watched`` sends it, ``release`` ends it.
        """
        if self.hold_agent:
            self.hold_agent = False
            return self._call_and_hold(op, timeout, request)
        argv, payload = self.agent_argv(), json.dumps({"op": op, **request})
        self._log(argv, payload)
        result = self.transport.run(argv, stdin=payload.encode(), timeout=timeout)
        for line in result.stdout.splitlines():
            if line.startswith(AGENT_MARKER):
                return self._answer(op, line)
        raise self._no_answer(result)

    def _log(self, argv: list[str], payload: str) -> None:
        """`-v`: the command about to run here, the agent's source abbreviated, and its request."""
        source = agent_source()
        log_command(self.alias, [AGENT_PLACEHOLDER if arg == source else arg for arg in argv], payload)

    def _call_and_hold(self, op: str, timeout: float, request: dict[str, Any]) -> dict[str, Any]:
        argv, payload = self.agent_argv(), json.dumps({"op": op, **request, "hold": True})
        self._log(argv, payload)
        stream = self.transport.stream(argv, stdin=(payload + "\n").encode(), keep_input=True)
        try:
            answer = self._read_answer(op, stream, argv[0], timeout)
        except BaseException:
            stream.close()
            raise
        self._held = stream
        return answer

    def _read_answer(self, op: str, stream: CommandStream, command: str, timeout: float) -> dict[str, Any]:
        """The agent's answer line on ``stream``; what it printed before, and its exit status, if none came."""
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = stream.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise HostError(self.alias, f"{command} did not answer within {timeout:g}s")
            if line.startswith(AGENT_MARKER):
                return self._answer(op, line)
            if line == "":
                status = stream.exit_status(max(0.0, min(5.0, deadline - time.monotonic())))
                raise self._no_answer(CommandResult(1 if status is None else status, "".join(output), ""))
            output.append(line)

    def release(self) -> None:
        """End the agent that ``hold_agent`` left waiting, if no start took it: it exits, having started nothing."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _answer(self, op: str, line: str) -> dict[str, Any]:
        try:
            answer = json.loads(line[len(AGENT_MARKER):])
        except (ValueError, RecursionError):
            raise HostError(self.alias, f"the agent's answer to {op!r} is not valid JSON",
                            "check the host's `python:`; run with -v to see the exchange") from None
        if not isinstance(answer, dict):
            raise HostError(self.alias, f"the agent's answer to {op!r} is not a JSON object")
        if "refused" in answer:  # e.g. a run directory another user can write to
            raise HostError(self.alias, str(answer["refused"]), str(answer.get("hint") or "") or None)
        return answer

    def _no_answer(self, result: CommandResult) -> HostError:
        """What went wrong when the agent wrote no answer."""
        if result.exit_status == 127:
            return HostError(self.alias, f"{self.python}: command not found",
                             "set `python:` for this host to an interpreter that has dask and distributed")
        detail = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or ["no output"])[-1]
        if self.settings.setup and result.exit_status != 0:
            return HostError(self.alias, f"setup lines or {self.python} failed (exit {result.exit_status}): {detail}",
                             "check the host's `setup:` lines and `python:`")
        return HostError(self.alias, f"{self.python} failed (exit {result.exit_status}): {detail}",
                         "check that `python:` names a working Python 3.8+ interpreter")

    def _checked(self, op: str, parse: Any) -> Any:
        try:
            return parse()
        except AnswerError as exc:
            raise HostError(self.alias, f"the agent's answer to {op!r} is malformed: {exc}",
                            "is `python:` on this host running clusterctl's agent? run with -v to see it") from None

    def start(self, plans: list[ProcessPlan]) -> list[ProcessRecord | StartFailure]:
        """Start processes detached, each in its own session; one record (or failure) per plan, in order."""
        answer = self.call("start", run_dir=self.run_dir, processes=[_agent_request(p) for p in plans])
        return self._started(plans, answer)

    def start_watched(self, plans: list[ProcessPlan], seconds: float
                      ) -> tuple[list[ProcessRecord | StartFailure], ExitWatch]:
        """``start``, with the agent left attached for up to ``seconds``: the returned watch reports
        any of these processes that exits, with its log's tail, at no cost while none does."""
        argv = self.agent_argv()
        payload = json.dumps({"op": "start", "run_dir": self.run_dir, "processes": [_agent_request(p) for p in plans],
                              "watch_seconds": seconds, "tail_lines": WATCH_TAIL_LINES})
        stream, self._held = self._held, None
        try:
            if stream is not None:  # the agent that checked this host waits for it: no second command
                log_more(self.alias, payload)  # `-v`
                try:
                    stream.send((payload + "\n").encode())
                except OSError as exc:
                    raise HostError(self.alias, f"the agent that checked the host is gone: {exc}",
                                    "run `clusterctl up` again") from None
            else:
                self._log(argv, payload)
                stream = self.transport.stream(argv, stdin=payload.encode())
            records = self._started(plans, self._read_answer("start", stream, argv[0], AGENT_TIMEOUT))
        except BaseException:
            if stream is not None:
                stream.close()
            raise
        return records, ExitWatch(self.alias, stream)

    def _started(self, plans: list[ProcessPlan], answer: dict[str, Any]) -> list[ProcessRecord | StartFailure]:
        def parse() -> list[ProcessRecord | StartFailure]:
            items = list_of(answer, "processes")
            if len(items) != len(plans):
                raise AnswerError(f"{len(items)} answers for {len(plans)} processes")
            results: list[ProcessRecord | StartFailure] = []
            for plan, item in zip(plans, items, strict=True):
                if field_of(item, "name", str) != plan.name:
                    raise AnswerError(f"answer for {item.get('name')!r} where {plan.name!r} was expected")
                if item.get("error") is not None:
                    results.append(StartFailure(plan.name, str(field_of(item, "error", str))))
                    continue
                results.append(ProcessRecord(
                    role=plan.role, name=plan.name, host=self.alias, pid=pid_of(item),
                    start_time=field_of(item, "start_time", int, optional=True), log=field_of(item, "log", str),
                    worker_names=list(plan.worker_names), argv=list(plan.argv), env=dict(plan.env),
                    setup=list(plan.setup), group=plan.group, gpu=asdict(plan.gpu) if plan.gpu else None))
            return results

        return self._checked("start", parse)

    def alive(self, records: list[ProcessRecord]) -> dict[int, bool]:
        answer = self.call("alive", processes=[{"pid": r.pid, "start_time": r.start_time} for r in records])
        return self._checked("alive", lambda: {pid_of(p): field_of(p, "alive", bool)
                                               for p in list_of(answer, "processes")})

    def stop(self, records: list[ProcessRecord], grace: float) -> dict[int, bool]:
        """SIGTERM each process group, SIGKILL after ``grace`` seconds; returns pid -> verified gone."""
        return {p.pid: p.gone for p in self.sweep(records, grace, include_pid_files=False)}

    def sweep(self, records: list[ProcessRecord], grace: float, include_pid_files: bool = True) -> list[StopOutcome]:
        """Stop ``records`` and, with ``include_pid_files``, whatever the run directory's pid files
        name; one outcome per process, ``gone`` verified."""
        request = [{**r.identity(), "pid_file": f"{self.run_dir}/{r.name}.pid"} for r in records]
        answer = self.call("stop", timeout=grace + AGENT_TIMEOUT, processes=request, grace=grace,
                           run_dir=self.run_dir if include_pid_files else None)
        return self._checked("stop", lambda: [StopOutcome.from_answer(p) for p in list_of(answer, "processes")])

    def listing(self) -> list[FoundProcess]:
        """What the pid files in this host's run directory say runs here."""
        answer = self.call("list", run_dir=self.run_dir)
        return self._checked("list", lambda: [FoundProcess.from_answer(p) for p in list_of(answer, "processes")])

    def elsewhere(self) -> list[str]:
        """Hosts outside the inventory that this (scheduler) host's run directory points at; see ``note_elsewhere``."""
        answer = self.call("list", run_dir=self.run_dir)
        return self._checked("list", lambda: addresses_of(answer, "elsewhere"))

    def note_elsewhere(self, address: str) -> None:
        """Leave a pointer to ``address`` (a host outside the inventory that runs one of our workers) in
        this host's run directory, where a `down CONFIG` without local state looks."""
        self.upload({f"elsewhere-{address}": b"{}"})

    def versions(self, packages: list[str] | None = None) -> dict[str, Any]:
        """python, what distributed compares, and ``packages``: metadata versions (None: not installed)."""
        return self.versions_and_gpus(packages)[0]

    def versions_and_gpus(self, packages: list[str] | None = None, gpu_probe: dict[str, Any] | None = None
                          ) -> tuple[dict[str, Any], list[Gpu] | str | None]:
        """``versions``, and with ``gpu_probe`` ({env, setup} of a GPU worker group) in the same round
        trip the GPUs ``nvidia-smi`` lists run that way: a list, or the text of why there is none."""
        versions, gpus, _ = self.check(packages, gpu_probe)
        return versions, gpus

    def check(self, packages: list[str] | None = None, gpu_probe: dict[str, Any] | None = None,
              free_port: tuple[str, int] | None = None
              ) -> tuple[dict[str, Any], list[Gpu] | str | None, dict[str, Any] | None]:
        """``versions_and_gpus``, and in the same round trip, given ``free_port`` (address, port): whether
        that port is free here (``listening``), else its ``error`` and whether it is ``in_use``."""
        request: dict[str, Any] = {"packages": list(packages or [])}
        if gpu_probe is not None:
            request["gpus"] = gpu_probe
        if free_port is not None:
            request["free_port"] = {"host": free_port[0], "port": free_port[1]}
        answer = self.call("versions", **request)
        port = answer.pop("free_port", None)

        def parse_port() -> dict[str, Any] | None:
            return None if free_port is None else listening_of(port)

        return self._checked("versions", lambda: (versions_of(answer), gpus_of(answer), parse_port()))

    def check_port(self, packages: list[str], gpu_probe: dict[str, Any] | None, serve: dict[str, Any] | None,
                   reach: dict[str, Any] | None) -> tuple[dict[str, Any], list[Gpu] | str | None, dict[str, Any]]:
        """`check`'s one round trip: ``versions_and_gpus``, and the scheduler port's experiment. Given
        ``serve`` ({host, port, seconds, accepts}) the port is bound first and served until ``accepts``
        connections came or ``seconds`` passed, then closed: ``{"serve": {listening, accepted} or {listening:
        False, error, in_use}}``; given ``reach`` ({host, port, timeout}) a connection to it is tried, again
        while refused: ``{"reach": {connected, error}}``."""
        request: dict[str, Any] = {"packages": list(packages)}
        if gpu_probe is not None:
            request["gpus"] = gpu_probe
        if serve is not None:
            request["serve"] = serve
        if reach is not None:
            request["reach"] = reach
        answer = self.call("versions", timeout=AGENT_TIMEOUT + float(serve["seconds"] if serve else 0), **request)
        served, reached = answer.pop("serve", None), answer.pop("reach", None)

        def parse_ports() -> dict[str, Any]:
            ports: dict[str, Any] = {}
            if serve is not None:
                ports["serve"] = listening_of(served, accepted=int)
            if reach is not None:
                ports["reach"] = connected_of(reached)
            return ports

        return self._checked("versions", lambda: (versions_of(answer), gpus_of(answer), parse_ports()))

    def listen(self, host: str, port: int, seconds: float) -> dict[str, Any]:
        """A test listener on ``host:port`` for `check` (see the agent's ``listen``)."""
        answer = self.call("listen", host=host, port=port, seconds=seconds)
        return self._checked("listen", lambda: listener_of(answer))

    def connect(self, host: str, port: int, timeout: float) -> dict[str, Any]:
        """Can this host open a TCP connection to ``host:port``?"""
        answer = self.call("connect", host=host, port=port, timeout=timeout)
        return self._checked("connect", lambda: connected_of(answer))

    def stop_listener(self, pid: int, start_time: int | None) -> bool:
        """Stop what ``listen`` started; True once it is verified gone."""
        answer = self.call("stop", processes=[{"pid": pid, "start_time": start_time}], grace=2.0)

        def parse() -> bool:
            items = list_of(answer, "processes")
            if len(items) != 1:
                raise AnswerError(f"{len(items)} answers for 1 process")
            return bool(field_of(items[0], "gone", bool))

        return self._checked("stop", parse)

    def upload(self, files: dict[str, bytes]) -> None:
        """Private files (0600) into the run directory (made 0700, with tls/): ``{"tls/ca.pem": data}``."""
        self.call("prepare", run_dir=self.run_dir)
        run_dir = self.absolute_run_dir()  # a file transfer resolves no `~` either
        for relative, data in files.items():
            self.transport.put_file(f"{run_dir}/{relative}", data, 0o600)

    def tail(self, path: str, lines: int = 20) -> str:
        answer = self.call("tail", path=path, lines=lines)
        return self._checked("tail", lambda: field_of(answer, "text", str, optional=True) or "")

    def read_logs(self, files: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Pieces of log files (see the agent's ``read``): one answer object per file, in order."""
        answer = self.call("read", timeout=timeout, files=files)

        def parse() -> list[dict[str, Any]]:
            items = list_of(answer, "files")
            if len(items) != len(files) or not all(isinstance(item, dict) for item in items):
                raise AnswerError(f"{len(items)} answers for {len(files)} files")
            for item in items:
                if "error" not in item:
                    field_of(item, "text", str), field_of(item, "offset", int)
            return items

        return self._checked("read", parse)

    def describe_start(self, plans: list[ProcessPlan]) -> list[str]:
        """``up --dry-run``: the shell equivalent of what the agent's ``start`` runs for each plan.

        Derived from the same request the agent executes (``agent.launch_argv``), so it cannot drift.
        """
        lines = []
        for plan in plans:
            request = _agent_request(plan)
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
            host_setup = "".join(f"{line}; " for line in self.settings.setup)
            log = agent.log_path(self.run_dir, plan.name)
            lines.append(mask(f"{host_setup}{'env ' + env + ' ' if env else ''}setsid {shlex.join(agent.launch_argv(request))} "
                              f"</dev/null >>{shlex.quote(log)} 2>&1 &"))  # secrets as `-v` masks them
        return lines
