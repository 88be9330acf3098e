"""``connection: local``: the machine clusterctl runs on, through subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from clusterctl.errors import HostError
from clusterctl.transport.base import (
    MAX_OUTPUT_BYTES,
    STREAM_END_WAIT,
    CommandResult,
    LineReader,
    too_much_output,
)


def host_environment() -> dict[str, str]:
    """What a local command inherits: this machine's environment without clusterctl's own
    variables (CLUSTERCTL_SSH_PASSWORD above all), as an SSH host's commands never see them."""
    return {key: value for key, value in os.environ.items() if not key.startswith("CLUSTERCTL_")}


def _drain(stream: IO[bytes] | None, sink: bytearray, full: threading.Event) -> None:
    """Read ``stream`` into ``sink``, stopping once it holds more than the cap (then ``full`` is set)."""
    assert stream is not None
    try:
        while len(sink) <= MAX_OUTPUT_BYTES and (chunk := stream.read1(65536)):  # type: ignore[attr-defined]
            sink.extend(chunk)
    except (OSError, ValueError):
        pass  # closed under us: the command was killed
    if len(sink) > MAX_OUTPUT_BYTES:
        full.set()


def _feed(stream: IO[bytes] | None, data: bytes, keep_open: bool = False) -> None:
    assert stream is not None
    try:
        stream.write(data)
        if keep_open:
            stream.flush()
        else:
            stream.close()
    except OSError:
        pass  # the command exited without reading all its input, like a closed pipe


class LocalStream(LineReader):
    def __init__(self, process: subprocess.Popen[bytes], feeder: threading.Thread, input_open: bool = False) -> None:
        assert process.stdout is not None
        self._process = process
        self._feeder = feeder
        self._input_open = input_open
        super().__init__(process.stdout.readline)

    def exit_status(self, timeout: float) -> int | None:
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def send(self, data: bytes) -> None:
        self._feeder.join()  # the first input goes first
        assert self._process.stdin is not None
        self._process.stdin.write(data)  # OSError (a closed pipe) when the command is gone
        self._process.stdin.flush()

    def close(self) -> None:
        if self._input_open:  # the end of its input first: an agent waiting on it exits by itself
            self._input_open = False
            self._feeder.join()
            assert self._process.stdin is not None
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(STREAM_END_WAIT)
        # Not by closing our end of its output: our reader thread holds that file's lock while it waits.
        if self._process.poll() is None:
            self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class LocalTransport:
    def __init__(self, host: str, address: str | None = None) -> None:
        self.host = host
        self.address = address or "127.0.0.1"

    def connect(self) -> None:
        pass  # this machine is always reached

    def run(self, argv: list[str], *, stdin: bytes | None = None, timeout: float = 60.0) -> CommandResult:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=host_environment(),
                                       start_new_session=True)  # its own group: a timeout ends all it started
        except FileNotFoundError:
            raise HostError(self.host, f"command not found: {argv[0]}",
                            "install it or set `python:` in the inventory to an interpreter that exists") from None
        with process:
            try:
                return self._exchange(process, argv, stdin, timeout)
            except BaseException:  # Ctrl-C included: nothing it started outlives us in its group
                _kill_group(process)
                raise

    def _exchange(self, process: subprocess.Popen[bytes], argv: list[str], stdin: bytes | None,
                  timeout: float) -> CommandResult:
        stdout, stderr, full = bytearray(), bytearray(), threading.Event()
        # Both streams at once (an unread one would stall the other), each read up to the cap.
        readers = [threading.Thread(target=_drain, args=(process.stdout, stdout, full), daemon=True),
                   threading.Thread(target=_drain, args=(process.stderr, stderr, full), daemon=True)]
        if stdin is not None:
            readers.append(threading.Thread(target=_feed, args=(process.stdin, stdin), daemon=True))
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        for reader in readers:
            # A full stream ends the wait at once: the other reader would wait for a command that,
            # blocked on the unread one, never ends, until the timeout.
            while reader.is_alive() and not full.is_set() and (left := deadline - time.monotonic()) > 0:
                reader.join(min(left, 0.05))
        status: int | None = None
        overflow = len(stdout) > MAX_OUTPUT_BYTES or len(stderr) > MAX_OUTPUT_BYTES
        try:
            status = None if overflow else process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if status is None:
            _kill_group(process)
            for reader in readers:  # at EOF now, unless something the command started holds its output
                reader.join(1.0)
            raise HostError(self.host, too_much_output(argv[0]) if overflow
                            else f"{argv[0]} did not finish within {timeout:g}s")
        return CommandResult(status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def stream(self, argv: list[str], *, stdin: bytes, keep_input: bool = False) -> LocalStream:
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       env=host_environment())
        except FileNotFoundError:
            raise HostError(self.host, f"command not found: {argv[0]}",
                            "install it or set `python:` in the inventory to an interpreter that exists") from None
        feeder = threading.Thread(target=_feed, args=(process.stdin, stdin, keep_input), daemon=True)
        feeder.start()
        return LocalStream(process, feeder, keep_input)

    def put_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        target = Path(path).expanduser()
        try:  # never through a symlink; the mode is set before the first byte, on the open file
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        except OSError as exc:
            raise HostError(self.host, f"cannot write {path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)
            handle.write(data)

    def open_tunnel(self, remote_host: str, remote_port: int, listener: socket.socket | None = None) -> int:
        """This machine's own ports need no tunnel (and a Unix socket would not make them private)."""
        if listener is not None:
            raise HostError(self.host, "a Unix socket cannot make a dashboard on this machine private: it listens on "
                            f"127.0.0.1:{remote_port} already", "run `clusterctl dashboard` without --socket")
        return remote_port

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and everything it started in its own process group (not its daemons)."""
    if process.returncode is not None:
        return  # reaped: its pid, and so its group's id, may be someone else's by now
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
