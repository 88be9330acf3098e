"""The transport interface: how clusterctl reaches a host.

A transport runs an argv on its host, and reads and writes small files there. Everything above
this package is transport-agnostic: the same code drives ``connection: local`` (subprocess) and
``connection: ssh`` (paramiko). Library errors are turned into ``HostError`` here, at the
boundary, with a hint for the fix.
"""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: What clusterctl reads of one remote command's stdout (and, apart, its stderr): a host that
#: writes more is answered with a ``HostError``, not with all of this machine's memory.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
STREAM_END_WAIT = 2.0  # seconds a closed stream waits for its command to end, once its input ended


def too_much_output(command: str) -> str:
    return f"{command} wrote more than {MAX_OUTPUT_BYTES // (1024 * 1024)} MiB of output: stopped reading it"


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its exit status and its (decoded) output."""

    exit_status: int
    stdout: str
    stderr: str


class CommandStream(Protocol):
    """A command that is still running: its output (stdout and stderr together) line by line."""

    def readline(self, timeout: float | None = None) -> str | None:
        """The next line; ``""`` once the output ended; None if no line came within ``timeout`` seconds."""
        ...

    def exit_status(self, timeout: float) -> int | None:
        """The command's exit status once it ended, waiting up to ``timeout`` seconds; None if not known by then."""
        ...

    def send(self, data: bytes) -> None:
        """More input, for a stream started with ``keep_input``; ``OSError`` if the command's input is gone."""
        ...

    def close(self) -> None:
        """Stop reading: the command sees its output closed (and should exit). Safe to call twice."""
        ...


class LineReader:
    """Lines of a command's output, read by a thread of their own into a queue (``""`` at the end)."""

    def __init__(self, readline: Callable[[], bytes]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._readline = readline
        self.ended = threading.Event()  # the output ended (the command closed it, or it was closed under us)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        total = 0
        try:
            while total <= MAX_OUTPUT_BYTES and (line := self._readline()):
                total += len(line)
                self._lines.put(line.decode(errors="replace"))
        except (OSError, ValueError, EOFError):
            pass  # closed under us
        self._lines.put("")
        self.ended.set()

    def readline(self, timeout: float | None = None) -> str | None:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line == "":
            self._lines.put("")  # the end stays the end for every later call
        return line


class Transport(Protocol):
    """One connection to one host, reused for every step of a command.

    ``host`` is the inventory alias (or bare address) used in every message about this host.
    Implementations connect lazily on first use, and are context managers that close on exit.
    """

    host: str
    #: The address other machines use to reach this host (a worker's way to the scheduler):
    #: the inventory's ``address``, else what the connection resolved (ssh_config HostName),
    #: else the alias. ``127.0.0.1`` for a local host without an address.
    address: str

    def connect(self) -> None:
        """Connect and authenticate now, if not yet (nothing to do for this machine); ``HostError`` if not."""
        ...

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        """Run ``argv`` on the host and wait for it.

        ``argv`` is a list, never a string: the SSH transport quotes it with ``shlex.join`` when
        it crosses the remote shell, the local one hands it to ``subprocess`` as it is. A command
        that runs but exits non-zero is returned, not raised; failing to reach the host, to
        authenticate or to finish within ``timeout`` seconds raises ``HostError``.
        """
        ...

    def stream(self, argv: list[str], *, stdin: bytes, keep_input: bool = False) -> CommandStream:
        """Start ``argv`` on the host with ``stdin`` (then its end), and hand its output over as it comes.

        For a command that answers and then keeps reporting (the agent's watched start); ``run`` waits
        for the end instead. With ``keep_input`` its input stays open for ``send`` (an agent that waits
        for its next request); ``close`` ends it. Failing to reach the host raises ``HostError``.
        """
        ...

    def put_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` to ``path`` on the host with permissions ``mode`` (parents must exist)."""
        ...

    def open_tunnel(self, remote_host: str, remote_port: int, listener: socket.socket | None = None) -> int:
        """A port on this machine's 127.0.0.1 that leads to ``remote_host:remote_port`` as the host
        sees it (for SSH, like `ssh -L`); open until ``close()``. Given a ``listener`` (a Unix
        socket only its user may open), connections come through it instead, and 0 is returned."""
        ...

    def close(self) -> None:
        """Release the connection. Safe to call twice."""
        ...

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc_info: object) -> None: ...
