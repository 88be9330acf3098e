"""A command that reaches its timeout is ended on its host, with what it started there (issue 11, 5).

Over SSH, closing the channel does not end a command (sshd leaves it running, and refuses RFC 4254
"signal" requests for root sessions); locally, killing the child alone leaves its children.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clusterctl.errors import HostError
from clusterctl.inventory import HostSettings
from clusterctl.transport.base import Transport
from clusterctl.transport.local import LocalTransport
from clusterctl.transport.ssh import SSHTransport
from tests.helpers.cluster import wait_until
from tests.helpers.fixtures import SshdTestBed


def alive(pid: int) -> bool:
    """Running, not a zombie (this container's PID 1 does not reap orphans)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """Where the shell writes its pid and its child's; whatever is still alive at the end is killed by pid."""
    path = tmp_path / "pids"
    yield path
    if path.exists():
        for pid in (int(p) for p in path.read_text().split()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def times_out_leaving(transport: Transport, pids: Path) -> tuple[int, int]:
    """Run a shell that starts a child and waits; past the timeout, return the shell's and the child's pids."""
    line = f"sleep 600 & echo $$ $! > {pids}.tmp && mv {pids}.tmp {pids}; wait"
    pool = ThreadPoolExecutor(max_workers=1)  # a run() that waits for the child fails here, not hangs
    try:
        future = pool.submit(transport.run, ["sh", "-c", line], timeout=1)
        with pytest.raises(HostError, match=r": sh did not finish within 1s$"):
            future.result(timeout=120)
    finally:
        pool.shutdown(wait=False)
    assert wait_until(pids.exists, timeout=30)
    shell, child = (int(pid) for pid in pids.read_text().split())
    return shell, child


def test_a_local_command_past_its_timeout_is_ended_with_its_children(pids: Path) -> None:
    shell, child = times_out_leaving(LocalTransport("me"), pids)
    assert wait_until(lambda: not alive(shell) and not alive(child), timeout=30), "left running"


@pytest.mark.ssh
def test_an_ssh_command_past_its_timeout_is_ended_on_the_host_with_its_children(
        sshd: SshdTestBed, pids: Path) -> None:
    with SSHTransport("web1", HostSettings(**sshd.host())) as transport:
        shell, child = times_out_leaving(transport, pids)
        assert wait_until(lambda: not alive(shell) and not alive(child), timeout=30), "left running on the host"
        assert transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"]).stderr == "err\n", \
            "the pid line the wrapper announces never reaches a caller"



def test_a_local_command_that_floods_one_stream_is_cut_off_at_the_cap_not_at_its_timeout(pids: Path) -> None:
    """Past 64 MiB on stdout the command is ended at once: waiting for its silent stderr would wait
    out the timeout (an hour here), since the command, blocked on the unread stdout, never ends."""
    line = f"echo $$ > {pids}.tmp && mv {pids}.tmp {pids}; yes 0123456789abcdef; sleep 3600"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            LocalTransport("me").run(["sh", "-c", line], timeout=3600)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)  # a run() that waits out the hour fails here, not hangs
    thread.start()
    try:
        thread.join(120)  # far less than the hour; a slow, loaded machine needs a few seconds
        assert not thread.is_alive(), "still waiting for a command whose output passed the cap"
        assert len(outcome) == 1 and isinstance(outcome[0], HostError), outcome
        assert "wrote more than 64 MiB of output" in str(outcome[0])
    finally:
        if pids.exists():  # the shell leads its own group (a new session): `yes` and `sleep` with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pids.read_text()), signal.SIGKILL)


def test_a_local_stream_with_open_input_takes_more_and_its_close_waits_for_the_command_to_end(
        tmp_path: Path) -> None:
    """`up`'s held agent on a `connection: local` host: a second line later on the same command, and
    the end of its input, at close, lets it finish by itself (it is not killed, nothing outlives `up`)."""
    done = tmp_path / "finished"
    script = ('read first; echo "got $first"; read second; echo "got $second"; '
              f'cat >/dev/null; sleep 0.5; touch "{done}"')
    stream = LocalTransport("me").stream(["sh", "-c", script], stdin=b"one\n", keep_input=True)
    assert stream.readline(30) == "got one\n"
    stream.send(b"two\n")
    assert stream.readline(30) == "got two\n"
    stream.close()
    assert done.exists(), "close returned before the command ended on its input's end"
