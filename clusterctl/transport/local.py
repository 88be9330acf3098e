"""``connection: local``: the machine clusterctl runs on, through subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clusterctl.errors import HostError
from clusterctl.transport.base import CommandResult


def host_environment() -> dict[str, str]:
    """What a local command inherits: this machine's environment without clusterctl's own
    variables (CLUSTERCTL_SSH_PASSWORD above all), as an SSH host's commands never see them."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CLUSTERCTL_")}


class LocalTransport:
    def __init__(self, host: str, address: str | None = None) -> None:
        self.host = host
        self.address = address or "127.0.0.1"

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=host_environment(),
                                  stdin=None if stdin is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise HostError(self.host, f"command not found: {argv[0]}",
                            "install it or set `python:` in the inventory to an interpreter that exists") from None
        except subprocess.TimeoutExpired:
            raise HostError(self.host, f"{argv[0]} did not finish within {timeout:g}s") from None
        return CommandResult(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))

    def put_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        target = Path(path).expanduser()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(target, mode)

    def open_tunnel(self, remote_host: str, remote_port: int) -> int:
        """This machine's own ports need no tunnel."""
        return remote_port

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
