"""A multi-host test bed on one machine: N network namespaces on a private bridge, each running its own sshd.

Layout of a bed with id ``ab12`` on subnet ``10.213.K.0/24``::

    root namespace:  bridge cctlbrab12 (10.213.K.1/24)
                       |-- veth cctlab12h1 <-> eth0 in namespace cctl-ab12-h1 (10.213.K.11/24), sshd on :22
                       |-- veth cctlab12h2 <-> eth0 in namespace cctl-ab12-h2 (10.213.K.12/24), sshd on :22
                       ...

The hosts reach each other and the bridge address, nothing else: no default route, no NAT, no forwarding.
They share the machine's filesystem, so every host gets its own ``run_dir``.

Three ways in:

- the session fixture ``testbed`` (4 hosts; skipped without root, ``ip netns`` or sshd);
- ``create_testbed(n, workdir)`` / ``Testbed.destroy()``;
- ``python -m tests.helpers.testbed up --hosts N [--dir DIR]`` / ``down [--dir DIR]`` / ``prune``.

Every bed records itself in ``<workdir>/testbed.json`` and in a registry under ``/run`` as it is built, so a
bed whose owner died without cleaning up (SIGKILL, a hard timeout) is removed by ``prune`` — the fixture
prunes at the start of each session. Processes are only ever found, and killed, by their network namespace.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.sshd import Sshd, make_client_key, start_sshd
from tests.helpers.sshd import unavailable_reason as sshd_unavailable_reason

BED_NETWORK = ipaddress.ip_network("10.213.0.0/16")  # each bed takes one free /24 of it
FIRST_HOST_OCTET = 10  # host i is 10.213.K.(10 + i)
MAX_HOSTS = 200
SSH_PORT = 22
DEFAULT_DIR = Path("/tmp/clusterctl-testbed")
STATE_FILE = "testbed.json"
INVENTORY_FILE = "inventory.yaml"
REGISTRY_DIR = Path("/run/clusterctl-testbed")
NETNS_DIR = Path("/run/netns")
SSHD_BINARY = "/usr/sbin/sshd"
FIXTURE_HOSTS = 4
TERM_GRACE_SECONDS = 3.0
READY_TIMEOUT_SECONDS = 15.0


class TestbedError(RuntimeError):
    """The bed could not be built or torn down; the message says what and where."""

    __test__ = False  # not a pytest test class


class TestbedUnavailableError(TestbedError):
    """This machine cannot host a bed (not root, no ``ip netns``, no sshd)."""


@dataclass
class BedHost:
    """One "machine": a network namespace with one address and its own sshd."""

    alias: str  # h1, h2, ...
    address: str
    netns: str
    veth: str  # the root-namespace end of the host's cable; down = unplugged
    run_dir: Path
    sshd_dir: Path
    sshd: Sshd | None = None  # while started by this process
    sshd_pid: int | None = None  # survives a save/load, unlike `sshd`

    @property
    def host_key_path(self) -> Path:
        """Kept across sshd restarts, so clients see the same host."""
        return self.sshd_dir / "ssh_host_ed25519_key"


@dataclass
class Testbed:
    """A built bed: its hosts, the bridge they hang on, the client key every sshd trusts."""

    __test__ = False  # not a pytest test class

    bed_id: str
    workdir: Path
    bridge: str
    bridge_address: str
    network: str
    client_key_path: Path | None = None
    client_public_key: str | None = None
    hosts: list[BedHost] = field(default_factory=list)
    owner_pid: int | None = None  # the bed is stale once this process is gone; None = kept until `down`
    owner_start_time: int | None = None

    # ---- looking things up -------------------------------------------------------------------

    def host(self, host: BedHost | str) -> BedHost:
        """A host by alias (``"h2"``), or the host itself."""
        if isinstance(host, BedHost):
            return host
        for candidate in self.hosts:
            if candidate.alias == host:
                return candidate
        raise KeyError(f"no host {host!r} in the test bed (hosts: {', '.join(h.alias for h in self.hosts)})")

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    # ---- inventories ---------------------------------------------------------------------------

    def inventory(self, **sections: Any) -> dict[str, Any]:
        """An inventory dict with every bed host under ``hosts``, merged with ``sections``.

        ``hosts`` entries given here update the bed's (or add hosts); ``defaults`` gets ``python`` =
        this interpreter unless it sets one. Everything else (name, scheduler, workers) is taken as given.
        """
        if self.client_key_path is None:
            raise TestbedError("the bed has no client key yet")
        hosts: dict[str, dict[str, Any]] = {
            host.alias: {
                "address": host.address,
                "port": SSH_PORT,
                "user": "root",
                "identity_file": str(self.client_key_path),
                "run_dir": str(host.run_dir),
                "host_key_policy": "accept-new",
            }
            for host in self.hosts
        }
        for alias, settings in (sections.pop("hosts", None) or {}).items():
            hosts[alias] = {**hosts.get(alias, {}), **settings}
        defaults = {"python": sys.executable, **(sections.pop("defaults", None) or {})}
        inventory: dict[str, Any] = {"name": sections.pop("name", "testbed"), "defaults": defaults, "hosts": hosts}
        inventory.update(sections)
        return inventory

    def write_inventory(self, path: str | Path, **sections: Any) -> Path:
        """``inventory(**sections)`` written as YAML to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.inventory(**sections), sort_keys=False), encoding="utf-8")
        return path

    def default_inventory(self) -> dict[str, Any]:
        """Scheduler on h1, one worker on every other host (on h1 too when it is the only host)."""
        first = self.hosts[0].alias
        worker_hosts = [h.alias for h in self.hosts[1:]] or [first]
        return self.inventory(
            scheduler={"host": first, "port": 8786, "dashboard_address": ":8787"},
            workers=[{"name": alias, "host": alias, "nworkers": 1, "nthreads": 1} for alias in worker_hosts],
        )

    # ---- acting inside a host ---------------------------------------------------------------------

    def run_in(
        self, host: BedHost | str, argv: Sequence[str], *, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host's namespace (``ip netns exec``), capturing text output."""
        return subprocess.run(
            ["ip", "netns", "exec", self.host(host).netns, *argv],
            capture_output=True, text=True, timeout=timeout, check=check, stdin=subprocess.DEVNULL,
        )

    def popen_in(self, host: BedHost | str, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start ``argv`` in the background inside the host; stdout (with stderr) is a text pipe.

        Returns once the process is in the host's namespace, so ``pids_in`` sees it at once.
        """
        host = self.host(host)
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        key = _namespace_key(host.netns)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        # `ip` enters the namespace just before it execs argv; until then it is in ours.
        while _namespace_key_of(process.pid) != key and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        return process

    def pids_in(self, host: BedHost | str) -> list[int]:
        """Processes living in the host's network namespace, except its sshd and sshd's own session processes."""
        host = self.host(host)
        key = _namespace_key(host.netns)
        if key is None:
            return []
        pids = _pids_in_namespace(key)
        return sorted(set(pids) - _sshd_family(host.sshd_pid, pids))

    def wait_for_no_pids(self, host: BedHost | str, timeout: float = 10.0) -> list[int]:
        """Wait until ``pids_in(host)`` is empty; the pids still there at the deadline ([] on success)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids_in(host)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    # ---- faults ------------------------------------------------------------------------------------

    def link_down(self, host: BedHost | str) -> None:
        """Unplug the host's cable: nothing reaches it or leaves it until ``link_up``; its processes live on."""
        _ip("link", "set", "dev", self.host(host).veth, "down")

    def link_up(self, host: BedHost | str) -> None:
        _ip("link", "set", "dev", self.host(host).veth, "up")

    def stop_sshd(self, host: BedHost | str) -> None:
        """Stop the host's sshd; processes started over SSH keep running."""
        host = self.host(host)
        if host.sshd is not None:
            host.sshd.stop()
        elif host.sshd_pid is not None:
            _terminate([host.sshd_pid], _namespace_key(host.netns))
        host.sshd, host.sshd_pid = None, None
        self.save()

    def start_sshd(self, host: BedHost | str) -> None:
        """(Re)start the host's sshd on its address, port 22, with the same host key as before."""
        host = self.host(host)
        if host.sshd is not None:
            raise TestbedError(f"{host.alias}: sshd is already running (pid {host.sshd_pid})")
        _start_host_sshd(self, host)
        _wait_for_ssh_banners([host])

    # ---- state ---------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything needed to find and remove the bed later, as JSON-ready data."""
        return {
            "bed_id": self.bed_id,
            "workdir": str(self.workdir),
            "bridge": self.bridge,
            "bridge_address": self.bridge_address,
            "network": self.network,
            "client_key_path": str(self.client_key_path) if self.client_key_path else None,
            "client_public_key": self.client_public_key,
            "owner_pid": self.owner_pid,
            "owner_start_time": self.owner_start_time,
            "hosts": [
                {
                    "alias": h.alias, "address": h.address, "netns": h.netns, "veth": h.veth,
                    "run_dir": str(h.run_dir), "sshd_dir": str(h.sshd_dir), "sshd_pid": h.sshd_pid,
                }
                for h in self.hosts
            ],
        }

    @classmethod
    def from_description(cls, data: dict[str, Any]) -> Testbed:
        """A bed read back from ``describe()`` (sshd objects are not restored, their pids are)."""
        hosts = [
            BedHost(
                alias=h["alias"], address=h["address"], netns=h["netns"], veth=h["veth"],
                run_dir=Path(h["run_dir"]), sshd_dir=Path(h["sshd_dir"]), sshd_pid=h.get("sshd_pid"),
            )
            for h in data["hosts"]
        ]
        key = data.get("client_key_path")
        return cls(
            bed_id=data["bed_id"], workdir=Path(data["workdir"]), bridge=data["bridge"],
            bridge_address=data["bridge_address"], network=data["network"],
            client_key_path=Path(key) if key else None, client_public_key=data.get("client_public_key"),
            hosts=hosts, owner_pid=data.get("owner_pid"), owner_start_time=data.get("owner_start_time"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Testbed:
        return cls.from_description(json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self) -> None:
        """Record the bed (in its workdir and in the registry) so it can be removed even if we die."""
        text = json.dumps(self.describe(), indent=2) + "\n"
        _write_atomically(self.state_path, text)
        REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomically(REGISTRY_DIR / f"{self.bed_id}.json", text)

    def exists(self) -> bool:
        """Whether any of the bed's bridge, veths or namespaces is still there."""
        return _link_exists(self.bridge) or any(
            _link_exists(h.veth) or (NETNS_DIR / h.netns).exists() for h in self.hosts
        )

    def is_stale(self) -> bool:
        """The owning process is gone (beds from ``up`` have no owner and are never stale)."""
        if self.owner_pid is None:
            return False
        return _process_start_time(self.owner_pid) != self.owner_start_time

    # ---- teardown ----------------------------------------------------------------------------------

    def destroy(self) -> None:
        """Kill every process in the hosts, remove namespaces, veths and the bridge. Safe to call again.

        Keeps going past failures and raises one ``TestbedError`` listing them at the end.
        """
        problems: list[str] = []
        for host in self.hosts:
            if host.sshd is not None:
                try:
                    host.sshd.stop()
                except (OSError, subprocess.SubprocessError) as exc:  # the namespace sweep below still kills it
                    problems.append(f"{host.alias}: stopping sshd: {exc}")
                host.sshd = None
            key = _namespace_key(host.netns)
            if key is not None:
                survivors = _empty_namespace(key)
                if survivors:
                    problems.append(f"{host.alias}: processes {survivors} survived SIGKILL")
            host.sshd_pid = None
            # Deleting our end of the veth is synchronous; a namespace's own teardown is not.
            for argv in (["link", "del", "dev", host.veth], ["netns", "del", host.netns]):
                error = _ip(*argv, check=False)
                if error and "Cannot find device" not in error and "No such file" not in error:
                    problems.append(f"{host.alias}: ip {' '.join(argv)}: {error}")
        error = _ip("link", "del", "dev", self.bridge, check=False)
        if error and "Cannot find device" not in error:
            problems.append(f"ip link del {self.bridge}: {error}")
        if self.exists():
            problems.append("some of the bridge, veths or namespaces are still there")
        if problems:
            raise TestbedError(f"test bed {self.bed_id}: " + "; ".join(problems))
        for path in (self.state_path, REGISTRY_DIR / f"{self.bed_id}.json"):
            path.unlink(missing_ok=True)


# ---- building ------------------------------------------------------------------------------------------


def unavailable_reason() -> str | None:
    """Why this machine cannot host a bed, or None if it can."""
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (network namespaces, veths, a bridge)"
    if shutil.which("ip") is None:
        return "the multi-host test bed needs iproute2's `ip`"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    if not os.access(SSHD_BINARY, os.X_OK):
        return f"the multi-host test bed needs the OpenSSH server ({SSHD_BINARY} is not installed)"
    return None


def create_testbed(n: int, workdir: Path, *, owner_pid: int | None = None) -> Testbed:
    """Build a bed of ``n`` hosts, recording it in ``workdir``; on any failure, remove what was built and raise.

    ``owner_pid``: the process whose death makes the bed stale for ``prune`` (None: the bed stays until
    ``destroy``/``down``).
    """
    reason = unavailable_reason()
    if reason:
        raise TestbedUnavailableError(reason)
    if not 1 <= n <= MAX_HOSTS:
        raise TestbedError(f"a test bed has 1 to {MAX_HOSTS} hosts, not {n}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _registry_lock():  # two beds being built at once must not pick the same subnet or names
        bed_id = _unused_bed_id()
        network = _free_network()
        bridge_ip = f"{network.network_address + 1}/{network.prefixlen}"
        bed = Testbed(
            bed_id=bed_id, workdir=workdir, bridge=f"cctlbr{bed_id}", bridge_address=str(network.network_address + 1),
            network=str(network), owner_pid=owner_pid,
            owner_start_time=_process_start_time(owner_pid) if owner_pid is not None else None,
        )
        bed.save()
        try:
            _ip("link", "add", "name", bed.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            _ip("addr", "add", bridge_ip, "dev", bed.bridge)  # claims the subnet for the next bed's scan
        except BaseException:
            _destroy_after_failure(bed)
            raise
    try:
        _ip("link", "set", "dev", bed.bridge, "up")
        bed.client_key_path, bed.client_public_key = make_client_key(workdir / "client")
        for index in range(1, n + 1):
            host = BedHost(
                alias=f"h{index}",
                address=str(network.network_address + FIRST_HOST_OCTET + index),
                netns=f"cctl-{bed_id}-h{index}",
                veth=f"cctl{bed_id}h{index}",
                run_dir=workdir / f"h{index}" / "run",
                sshd_dir=workdir / f"h{index}" / "sshd",
            )
            bed.hosts.append(host)
            bed.save()  # before creating anything of the host's, so a crash leaves it findable
            _plug_in(bed, host, network.prefixlen)
        for host in bed.hosts:
            _start_host_sshd(bed, host)
        _wait_for_ssh_banners(bed.hosts)
    except BaseException:
        _destroy_after_failure(bed)
        raise
    return bed


def _plug_in(bed: Testbed, host: BedHost, prefixlen: int) -> None:
    """Namespace, veth (our end on the bridge, the other end as the host's eth0), address, lo up."""
    _ip("netns", "add", host.netns)
    _ip("link", "add", "name", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip("link", "set", "dev", host.veth, "master", bed.bridge, "up")
    _ip("-n", host.netns, "addr", "add", f"{host.address}/{prefixlen}", "dev", "eth0")
    _ip("-n", host.netns, "link", "set", "dev", "eth0", "up")
    _ip("-n", host.netns, "link", "set", "dev", "lo", "up")


def _start_host_sshd(bed: Testbed, host: BedHost) -> None:
    assert bed.client_public_key is not None
    existing_key = host.host_key_path if host.host_key_path.exists() else None
    host.sshd = start_sshd(
        host.sshd_dir, address=host.address, port=SSH_PORT, authorized_keys=[bed.client_public_key],
        netns=host.netns, host_key_path=existing_key,
    )
    host.sshd_pid = host.sshd.pid
    bed.save()


def _wait_for_ssh_banners(hosts: Sequence[BedHost], timeout: float = READY_TIMEOUT_SECONDS) -> None:
    """Each host's sshd answers over the bridge from the root namespace (a TCP connect and an SSH banner)."""
    deadline = time.monotonic() + timeout
    for host in hosts:
        while True:
            try:
                with socket.create_connection((host.address, SSH_PORT), timeout=1) as conn:
                    conn.settimeout(2)
                    if conn.recv(8).startswith(b"SSH-"):
                        break
            except OSError as exc:
                if time.monotonic() > deadline:
                    where = f"{host.alias} ({host.address}:{SSH_PORT})"
                    raise TestbedError(f"{where} is not answering SSH: {exc}") from None
            time.sleep(0.05)


def _destroy_after_failure(bed: Testbed) -> None:
    try:
        bed.destroy()
    except TestbedError as exc:  # the original failure is the one to raise
        print(f"warning: cleaning up after a failed build: {exc}", file=sys.stderr)


def _unused_bed_id() -> str:
    for _ in range(100):
        bed_id = secrets.token_hex(2)
        if not _link_exists(f"cctlbr{bed_id}") and not (REGISTRY_DIR / f"{bed_id}.json").exists():
            return bed_id
    raise TestbedError("could not find an unused bed id")


def _free_network() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no address or route on this machine overlaps, picked at random.

    Random, so a new bed seldom reuses the addresses (and host keys in someone's known_hosts) of the last.
    """
    used = _used_networks()
    free = [
        net for net in BED_NETWORK.subnets(new_prefix=24)
        if net.network_address != BED_NETWORK.network_address and not any(net.overlaps(u) for u in used)
    ]
    if not free:
        raise TestbedError(f"no free /24 left in {BED_NETWORK}; run `python -m tests.helpers.testbed prune`")
    return random.choice(free)


def _used_networks() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_ip_output("-j", "-4", "addr", "show")):
        for info in entry.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_ip_output("-j", "-4", "route", "show", "table", "all")):
        destination = route.get("dst", "default")
        if destination != "default":  # the default route overlaps everything and takes nothing
            used.append(ipaddress.ip_network(destination, strict=False))
    return used


# ---- processes, found by network namespace -----------------------------------------------------------


def _namespace_key(netns: str) -> tuple[int, int] | None:
    """(device, inode) of a named network namespace, or None if it does not exist."""
    try:
        info = os.stat(NETNS_DIR / netns)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _namespace_key_of(pid: int) -> tuple[int, int] | None:
    try:
        info = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None  # gone, or a zombie (which holds no namespace)
    return info.st_dev, info.st_ino


def _pids_in_namespace(key: tuple[int, int]) -> list[int]:
    own = os.getpid()
    return [
        int(entry) for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != own and _namespace_key_of(int(entry)) == key
    ]


def _sshd_family(sshd_pid: int | None, pids: Sequence[int]) -> set[int]:
    """The sshd listener and its per-connection sshd processes (not the commands they run)."""
    if sshd_pid is None:
        return set()
    family = {sshd_pid}
    sshd_exe = _exe_of(sshd_pid)
    parents = {pid: _parent_of(pid) for pid in pids}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if pid not in family and parent in family and sshd_exe and _exe_of(pid) == sshd_exe:
                family.add(pid)
                grew = True
    return family


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the command name may contain spaces and ')'


def _exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, identifies it across pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _terminate(pids: Sequence[int], key: tuple[int, int] | None) -> list[int]:
    """SIGTERM, then SIGKILL, those of ``pids`` still in namespace ``key``; the ones left after both."""
    if key is None:
        return []
    remaining = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            _signal_if_in_namespace(pid, key, sig)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while (remaining := [p for p in remaining if _namespace_key_of(p) == key]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not remaining:
            break
    return remaining


def _empty_namespace(key: tuple[int, int]) -> list[int]:
    """Kill everything in the namespace, including what gets forked while we do; the survivors."""
    for _ in range(5):
        pids = _pids_in_namespace(key)
        if not pids:
            return []
        _terminate(pids, key)
    return _pids_in_namespace(key)


def _signal_if_in_namespace(pid: int, key: tuple[int, int], sig: signal.Signals) -> None:
    # A pidfd pins the process, so the namespace check and the signal are about the same process
    # even if the pid is recycled in between.
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if _namespace_key_of(pid) == key:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


# ---- small plumbing ------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; returns its error text ('' on success), raises on failure when ``check``."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    error = result.stderr.strip() if result.returncode != 0 else ""
    if error and check:
        raise TestbedError(f"ip {' '.join(args)}: {error}")
    if result.returncode != 0 and not error:
        error = f"exit status {result.returncode}"
    return error


def _ip_output(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise TestbedError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(REGISTRY_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def registered_beds() -> list[Testbed]:
    """Every bed recorded in the registry (any owner)."""
    beds = []
    for path in sorted(REGISTRY_DIR.glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            beds.append(Testbed.load(path))
    return beds


def prune_stale_beds() -> list[str]:
    """Destroy the beds whose owning process has died; their ids. One bed's failure does not stop the others."""
    pruned, problems = [], []
    with _registry_lock():
        for bed in registered_beds():
            if bed.is_stale():
                try:
                    bed.destroy()
                    pruned.append(bed.bed_id)
                except TestbedError as exc:
                    problems.append(str(exc))
    if problems:
        raise TestbedError("; ".join(problems))
    return pruned


# ---- cleanup on exit and on signals --------------------------------------------------------------------


class _CleanupGuard:
    """Destroys a bed at interpreter exit or on SIGTERM/SIGHUP, until released."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.previous: dict[int, Any] = {}
        atexit.register(self._destroy_quietly)
        if _in_main_thread():
            for sig in self.SIGNALS:
                current = signal.getsignal(sig)
                if current is not signal.SIG_IGN:  # e.g. under nohup, SIGHUP is not ours to act on
                    self.previous[sig] = current
                    signal.signal(sig, self._on_signal)

    def release(self) -> None:
        atexit.unregister(self._destroy_quietly)
        if _in_main_thread():
            for sig, previous in self.previous.items():
                signal.signal(sig, previous)
        self.previous.clear()

    def _destroy_quietly(self) -> None:
        try:
            self.bed.destroy()
        except (TestbedError, OSError, subprocess.SubprocessError) as exc:
            print(f"warning: {exc}", file=sys.stderr)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._destroy_quietly()
        previous = self.previous.get(signum, signal.SIG_DFL)
        self.release()
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)  # the default action, now that our handler is gone


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ---- pytest plugin ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """Four hosts h1..h4 on a private bridge, each with its own sshd; built on first use, removed at the end."""
    reason = unavailable_reason() or sshd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with contextlib.suppress(TestbedError, OSError):
        prune_stale_beds()  # left by runs that were killed too hard to clean up
    bed = create_testbed(FIXTURE_HOSTS, tmp_path_factory.mktemp("testbed"), owner_pid=os.getpid())
    guard = _CleanupGuard(bed)
    try:
        yield bed
    finally:
        guard.release()
        bed.destroy()


# ---- command line ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.testbed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a bed that outlives this command")
    up.add_argument("--hosts", type=int, default=FIXTURE_HOSTS, help="number of hosts (default %(default)s)")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the bed lives (default %(default)s)")
    down = commands.add_parser("down", help="remove the bed recorded in DIR")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="(default %(default)s)")
    commands.add_parser("prune", help="remove beds whose owning test run died")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _up(args.hosts, args.dir)
        if args.command == "down":
            return _down(args.dir)
        pruned = prune_stale_beds()
        print(f"removed {len(pruned)} stale test bed(s){': ' + ', '.join(pruned) if pruned else ''}")
        return 0
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _up(hosts: int, directory: Path) -> int:
    state = directory / STATE_FILE
    if state.exists():
        existing = Testbed.load(state)
        if existing.exists():
            raise TestbedError(f"a test bed ({existing.network}) is already up in {directory}; "
                               f"run `python -m tests.helpers.testbed down --dir {directory}` first")
        existing.destroy()  # only its records are left
    started = time.monotonic()
    bed = create_testbed(hosts, directory)
    inventory_path = bed.workdir / INVENTORY_FILE
    inventory = bed.default_inventory()
    inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    print(yaml.safe_dump(inventory, sort_keys=False), end="")
    print(f"# {hosts} host(s) on {bed.network} in {time.monotonic() - started:.1f}s; state: {bed.state_path}")
    print(f"# inventory: {inventory_path}")
    return 0


def _down(directory: Path) -> int:
    state = directory / STATE_FILE
    if not state.exists():
        print(f"no test bed recorded in {directory} (nothing to do)")
        return 0
    bed = Testbed.load(state)
    bed.destroy()
    print(f"test bed {bed.network} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
