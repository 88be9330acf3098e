"""The multi-host test bed itself: separate hosts that reach each other, and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clusterctl.inventory import load_inventory
from testbed import (
    BedHost,
    Testbed,
    TestbedError,
    TestbedUnavailableError,
    create_testbed,
    prune_stale_beds,
    registered_beds,
    unavailable_reason,
)
from testbed import build as testbed_build
from testbed.netns import namespace_key
from testbed.proc import alive

pytestmark = pytest.mark.netns

# argv: address port reply. Prints one line once it listens, then answers each connection with `reply`.
# SO_REUSEADDR as dask's listeners set it: without it, the connections it closed (TIME_WAIT for a minute)
# would keep a dask scheduler from binding the same port, e.g. 8786 in tests/test_testbed_cluster.py.
LISTENER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen()
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(sys.argv[3].encode())
    conn.close()
"""

# argv: address port. Prints what the server sends.
CONNECT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:
    print(conn.recv(100).decode())
"""


@contextlib.contextmanager
def listening_in(bed: Testbed, host: BedHost, address: str, port: int, reply: str) -> Iterator[int]:
    """A TCP server inside ``host`` until the block ends; yields its pid (stopped by that pid)."""
    process = bed.popen_in(host, [sys.executable, "-c", LISTENER, address, str(port), reply])
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "listening", f"listener in {host.alias} did not start"
        yield process.pid
    finally:
        process.kill()
        process.wait(timeout=10)


def connect_from(bed: Testbed, host: BedHost, address: str, port: int) -> str:
    result = bed.run_in(host, [sys.executable, "-c", CONNECT, address, str(port)], timeout=30)
    assert result.returncode == 0, f"{host.alias} -> {address}:{port}: {result.stdout}{result.stderr}"
    return result.stdout.strip()


def connect_from_root(address: str, port: int, timeout: float = 1.0) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        return conn.recv(100)


def leftovers(bed_id: str) -> list[str]:
    """Namespaces and links of the bed that still exist."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line for line in (namespaces + links).splitlines() if bed_id in line]


def namespace_inode(netns: str) -> str:
    return f"net:[{os.stat(Path('/run/netns', netns)).st_ino}]"


def test_hosts_reach_each_other_and_the_bridge_over_tcp(testbed: Testbed) -> None:
    h1, h2, h3, h4 = testbed.hosts
    with listening_in(testbed, h2, h2.address, 9100, "hello from h2"):
        assert connect_from(testbed, h3, h2.address, 9100) == "hello from h2"
        assert connect_from(testbed, h1, h2.address, 9100) == "hello from h2"

    # The root namespace is reachable at the bridge address, as a scheduler-side client would be.
    with socket.create_server((testbed.bridge_address, 0)) as server:
        port = server.getsockname()[1]
        with ThreadPoolExecutor(1) as pool:
            accepted = pool.submit(server.accept)
            connect = subprocess.Popen(["ip", "netns", "exec", h4.netns, sys.executable, "-c", CONNECT,
                                        testbed.bridge_address, str(port)], stdout=subprocess.PIPE, text=True)
            conn, (peer, _) = accepted.result(timeout=10)
            conn.sendall(b"hello from the root namespace")
            conn.close()
            assert connect.communicate(timeout=10)[0].strip() == "hello from the root namespace"
        assert peer == h4.address


def test_hosts_cannot_reach_outside_the_bed(testbed: Testbed) -> None:
    routes = testbed.run_in(testbed.hosts[0], ["ip", "-4", "route", "show"], check=True).stdout
    assert "default" not in routes
    assert routes.split()[0] == testbed.network


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ssh) is not installed")
def test_every_sshd_accepts_the_client_key_and_lands_in_its_host(testbed: Testbed) -> None:
    def ssh(host: BedHost) -> str:
        result = subprocess.run(
            ["ssh", "-i", str(testbed.client_key_path), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
             f"root@{host.address}", "readlink /proc/self/ns/net"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, f"{host.alias}: {result.stderr}"
        return result.stdout.strip()

    with ThreadPoolExecutor(len(testbed.hosts)) as pool:
        landed = list(pool.map(ssh, testbed.hosts))
    assert landed == [namespace_inode(host.netns) for host in testbed.hosts]


def test_the_same_port_is_free_on_every_host(testbed: Testbed) -> None:
    h1, h2 = testbed.hosts[:2]
    with listening_in(testbed, h1, "0.0.0.0", 8786, "h1"), listening_in(testbed, h2, "0.0.0.0", 8786, "h2"):
        assert connect_from_root(h1.address, 8786) == b"h1"
        assert connect_from_root(h2.address, 8786) == b"h2"


def test_pids_in_sees_a_process_until_it_is_killed(testbed: Testbed) -> None:
    h2, h3 = testbed.hosts[1:3]
    assert testbed.pids_in(h3) == []  # the host's sshd is not counted
    process = testbed.popen_in(h3, ["sleep", "60"])
    try:
        assert testbed.pids_in(h3) == [process.pid]  # `ip netns exec` execs: the pid is sleep's
        assert process.pid not in testbed.pids_in(h2)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert testbed.wait_for_no_pids(h3) == []


def test_link_down_cuts_a_host_off_and_link_up_restores_it(testbed: Testbed) -> None:
    h1, h4 = testbed.hosts[0], testbed.hosts[3]
    assert connect_from_root(h4.address, 22).startswith(b"SSH-")
    testbed.link_down(h4)
    try:
        with pytest.raises(OSError):
            connect_from_root(h4.address, 22, timeout=0.5)
        failed = testbed.run_in(h1, [sys.executable, "-c", CONNECT.replace("timeout=3", "timeout=0.5"),
                                     h4.address, "22"])
        assert failed.returncode != 0
    finally:
        testbed.link_up(h4)
    assert connect_from_root(h4.address, 22, timeout=5).startswith(b"SSH-")
    assert connect_from(testbed, h1, h4.address, 22).startswith("SSH-")


def test_sshd_stops_and_starts_again_with_the_same_host_key(testbed: Testbed) -> None:
    h2 = testbed.hosts[1]
    host_key = h2.sshd.host_public_key
    testbed.stop_sshd(h2)
    try:
        with pytest.raises(ConnectionRefusedError):
            connect_from_root(h2.address, 22)
    finally:
        testbed.start_sshd(h2)
    assert h2.sshd.host_public_key == host_key
    assert connect_from_root(h2.address, 22).startswith(b"SSH-")


def test_the_inventory_reaches_every_host_with_its_own_run_dir(testbed: Testbed, tmp_path: Path) -> None:
    path = testbed.write_inventory(
        tmp_path / "cluster.yaml",
        name="bed",
        scheduler={"host": "h1", "port": 8786},
        workers=[{"host": "h2", "nthreads": 2}, {"host": "h3"}],
        hosts={"h4": {"port": 2222}},
    )
    inventory = load_inventory(path)
    assert sorted(inventory.hosts) == ["h1", "h2", "h3", "h4"]
    assert inventory.host("h2").address == testbed.hosts[1].address
    assert inventory.host("h2").python == sys.executable
    assert inventory.host("h4").port == 2222 and inventory.host("h4").user == "root"
    run_dirs = {inventory.host(alias).run_dir for alias in inventory.hosts}
    assert len(run_dirs) == 4


def test_destroy_kills_everything_in_the_hosts_and_leaves_no_trace(tmp_path: Path) -> None:
    started = time.monotonic()
    bed = create_testbed(2, tmp_path, owner_pid=os.getpid())
    created = time.monotonic() - started
    try:
        h1, h2 = bed.hosts
        sleeper = bed.popen_in(h1, ["sleep", "60"])
        # Detached from us (a new session, and its parent exits at once), like a daemon started over SSH.
        bed.run_in(h2, ["sh", "-c", "setsid -f sleep 60 >/dev/null 2>&1"], check=True)
        (detached,) = bed.pids_in(h2)
    finally:
        started = time.monotonic()
        bed.destroy()
        destroyed = time.monotonic() - started
    assert sleeper.wait(timeout=10) != 0
    assert not alive(detached)  # exited: no such process, or a zombie that nobody has reaped yet
    assert leftovers(bed.bed_id) == []
    assert not bed.state_path.exists()
    bed.destroy()  # again: nothing to do, no error
    assert created < 5 and destroyed < 5, f"create {created:.2f}s, destroy {destroyed:.2f}s"


def test_a_failed_build_removes_what_it_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Testbed] = []
    start_sshd = testbed_build.start_host_sshd

    def fail_on_second_host(bed: Testbed, host: BedHost) -> None:
        built.append(bed)
        if host.alias == "h2":
            raise TestbedError("h2: sshd would not start (injected)")
        start_sshd(bed, host)

    monkeypatch.setattr(testbed_build, "start_host_sshd", fail_on_second_host)
    with pytest.raises(TestbedError, match="injected"):
        create_testbed(3, tmp_path)
    assert built
    assert leftovers(built[0].bed_id) == []
    assert namespace_key(built[0].hosts[0].netns) is None


def test_command_line_up_leaves_a_bed_running_and_down_removes_it(tmp_path: Path) -> None:
    directory = tmp_path / "bed"
    command = [sys.executable, "-m", "testbed"]
    up = subprocess.run([*command, "up", "--hosts", "2", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert up.returncode == 0, up.stderr
    bed = Testbed.load(directory / "testbed.json")
    try:
        assert f"# inventory: {directory / 'inventory.yaml'}" in up.stdout
        inventory = load_inventory(directory / "inventory.yaml")
        assert inventory.scheduler.host == "h1" and [g.host for g in inventory.workers] == ["h2"]
        for host in bed.hosts:  # the sshd servers outlived the command
            assert connect_from_root(host.address, 22, timeout=5).startswith(b"SSH-")
    finally:
        down = subprocess.run([*command, "down", "--dir", str(directory)],
                              capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert down.returncode == 0, down.stderr
    assert leftovers(bed.bed_id) == []


def test_prune_removes_a_bed_whose_owner_died(testbed: Testbed, tmp_path: Path) -> None:
    owner = subprocess.Popen(["sleep", "60"])
    bed = create_testbed(1, tmp_path, owner_pid=owner.pid)
    owner.kill()
    owner.wait()
    try:
        assert bed.bed_id in prune_stale_beds()
    finally:
        bed.destroy()
    assert leftovers(bed.bed_id) == []
    assert testbed.bed_id in {b.bed_id for b in registered_beds()}  # a live owner's bed stays


def test_the_bed_explains_why_it_cannot_run_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (unavailable_reason() or "")
    with pytest.raises(TestbedUnavailableError, match="needs root"):
        create_testbed(2, Path("/nonexistent"))

