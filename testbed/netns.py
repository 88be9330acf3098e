"""A bed's network, through iproute2's ``ip``: the bridge, each host's namespace and its cable (a veth pair),
and the processes living in a namespace, which are only ever found, and signalled, by that namespace."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.errors import TestbedError
from testbed.proc import all_pids, executable, network_namespace, process_stat

NETNS_DIR = Path("/run/netns")
TERM_GRACE_SECONDS = 3.0
ENTER_TIMEOUT_SECONDS = 15.0

NamespaceKey = tuple[int, int]  # (device, inode) of a network namespace


# ---- ip ------------------------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; returns its error text ('' on success), raises on failure when ``check``."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    error = result.stderr.strip() if result.returncode != 0 else ""
    if error and check:
        raise TestbedError(f"ip {' '.join(args)}: {error}")
    if result.returncode != 0 and not error:
        error = f"exit status {result.returncode}"
    return error


def ip_output(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise TestbedError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def namespace_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network an address or a route on this machine covers."""
    used: list[ipaddress.IPv4Network] = []
    for entry in json.loads(ip_output("-j", "-4", "addr", "show")):
        for info in entry.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(ip_output("-j", "-4", "route", "show", "table", "all")):
        destination = route.get("dst", "default")
        if destination != "default":  # the default route overlaps everything and takes nothing
            used.append(ipaddress.ip_network(destination, strict=False))
    return used


# ---- building and removing -------------------------------------------------------------------------------


def add_bridge(bridge: str, address: str) -> None:
    """A bridge with ``address`` (``a.b.c.d/len``), still down. The address claims the subnet for the next scan."""
    ip("link", "add", "name", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    ip("addr", "add", address, "dev", bridge)


def set_link(name: str, up: bool) -> None:
    ip("link", "set", "dev", name, "up" if up else "down")


def plug_in(netns: str, veth: str, bridge: str, address: str) -> None:
    """A namespace and its cable: our end ``veth`` on the bridge, the other end its eth0 with ``address``
    (``a.b.c.d/len``); eth0 and lo up."""
    ip("netns", "add", netns)
    ip("link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", "dev", veth, "master", bridge, "up")
    ip("-n", netns, "addr", "add", address, "dev", "eth0")
    ip("-n", netns, "link", "set", "dev", "eth0", "up")
    ip("-n", netns, "link", "set", "dev", "lo", "up")


def unplug(netns: str, veth: str) -> list[str]:
    """Delete the cable and the namespace; what failed (one already gone is no failure)."""
    problems = []
    # Deleting our end of the veth is synchronous; a namespace's own teardown is not.
    for argv in (["link", "del", "dev", veth], ["netns", "del", netns]):
        error = ip(*argv, check=False)
        if error and "Cannot find device" not in error and "No such file" not in error:
            problems.append(f"ip {' '.join(argv)}: {error}")
    return problems


def remove_bridge(bridge: str) -> list[str]:
    """Delete the bridge; what failed (already gone is no failure)."""
    error = ip("link", "del", "dev", bridge, check=False)
    return [f"ip link del {bridge}: {error}"] if error and "Cannot find device" not in error else []


# ---- running things inside a namespace -------------------------------------------------------------------


def run_in(netns: str, argv: Sequence[str], *, timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the namespace (``ip netns exec``), capturing text output."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv],
                          capture_output=True, text=True, timeout=timeout, check=check, stdin=subprocess.DEVNULL)


def popen_in(netns: str, argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``argv`` in the background inside the namespace; stdout (with stderr) is a text pipe.

    Returns once the process is in the namespace, so ``pids_in`` sees it at once.
    """
    process = subprocess.Popen(["ip", "netns", "exec", netns, *argv],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    key = namespace_key(netns)
    deadline = time.monotonic() + ENTER_TIMEOUT_SECONDS
    # `ip` enters the namespace just before it execs argv; until then it is in ours.
    while network_namespace(process.pid) != key and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return process


# ---- finding and signalling processes by namespace ------------------------------------------------------


def namespace_key(netns: str) -> NamespaceKey | None:
    """(device, inode) of a named network namespace, or None if it does not exist."""
    try:
        info = os.stat(NETNS_DIR / netns)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def pids_in_namespace(key: NamespaceKey) -> list[int]:
    own = os.getpid()
    return [pid for pid in all_pids() if pid != own and network_namespace(pid) == key]


def pids_in(netns: str, sshd_pid: int | None) -> list[int]:
    """Processes living in the namespace, except its sshd and sshd's own session processes."""
    key = namespace_key(netns)
    if key is None:
        return []
    pids = pids_in_namespace(key)
    return sorted(set(pids) - _sshd_family(sshd_pid, pids))


def _sshd_family(sshd_pid: int | None, pids: Sequence[int]) -> set[int]:
    """The sshd listener and its per-connection sshd processes (not the commands they run)."""
    if sshd_pid is None:
        return set()
    family = {sshd_pid}
    sshd_exe = executable(sshd_pid)
    parents = {pid: stat.parent if (stat := process_stat(pid)) else None for pid in pids}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if pid not in family and parent in family and sshd_exe and executable(pid) == sshd_exe:
                family.add(pid)
                grew = True
    return family


def terminate(pids: Sequence[int], key: NamespaceKey | None) -> list[int]:
    """SIGTERM, then SIGKILL, those of ``pids`` still in namespace ``key``; the ones left after both."""
    if key is None:
        return []
    remaining = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            _signal_if_in_namespace(pid, key, sig)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while (remaining := [p for p in remaining if network_namespace(p) == key]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not remaining:
            break
    return remaining


def empty_namespace(key: NamespaceKey) -> list[int]:
    """Kill everything in the namespace, including what gets forked while we do; the survivors."""
    for _ in range(5):
        pids = pids_in_namespace(key)
        if not pids:
            return []
        terminate(pids, key)
    return pids_in_namespace(key)


def _signal_if_in_namespace(pid: int, key: NamespaceKey, sig: signal.Signals) -> None:
    # A pidfd pins the process, so the namespace check and the signal are about the same process
    # even if the pid is recycled in between.
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if network_namespace(pid) == key:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
