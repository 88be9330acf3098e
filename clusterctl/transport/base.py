"""The transport interface: how clusterctl reaches a host.

A transport runs an argv on its host, and reads and writes small files there. Everything above
this package is transport-agnostic: the same code drives ``connection: local`` (subprocess) and
``connection: ssh`` (paramiko). Library errors are turned into ``HostError`` here, at the
boundary, with a hint for the fix.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol

#: What clusterctl reads of one remote command's stdout (and, apart, its stderr): a host that
#: writes more is answered with a ``HostError``, not with all of this machine's memory.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024


def too_much_output(command: str) -> str:
    return f"{command} wrote more than {MAX_OUTPUT_BYTES // (1024 * 1024)} MiB of output: stopped reading it"


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: its exit status and its (decoded) output."""

    exit_status: int
    stdout: str
    stderr: str


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

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        """Run ``argv`` on the host and wait for it.

        ``argv`` is a list, never a string: the SSH transport quotes it with ``shlex.join`` when
        it crosses the remote shell, the local one hands it to ``subprocess`` as it is. A command
        that runs but exits non-zero is returned, not raised; failing to reach the host, to
        authenticate or to finish within ``timeout`` seconds raises ``HostError``.
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
