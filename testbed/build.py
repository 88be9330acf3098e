"""Building a bed: can this machine host one, a free subnet and id, the bridge, a namespace and cable per
host, every host's sshd; whatever was built is removed again if any step fails. And owning a bed: removed
when its owner is done with it, exits, or is told to stop."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed import netns
from testbed.errors import TestbedError, TestbedUnavailableError
from testbed.model import REGISTRY_DIR, BedHost, Testbed, start_host_sshd, wait_for_ssh
from testbed.proc import start_time
from testbed.registry import registry_lock
from testbed.sshd import make_client_key
from testbed.sshd import unavailable_reason as sshd_unavailable_reason

BED_NETWORK = ipaddress.ip_network("10.213.0.0/16")  # each bed takes one free /24 of it
FIRST_HOST_OCTET = 10  # host i is 10.213.K.(10 + i)
MAX_HOSTS = 200


def unavailable_reason() -> str | None:
    """Why this machine cannot host a bed, or None if it can."""
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (network namespaces, veths, a bridge)"
    if shutil.which("ip") is None:
        return "the multi-host test bed needs iproute2's `ip`"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return sshd_unavailable_reason()


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
    with registry_lock():  # two beds being built at once must not pick the same subnet or names
        bed_id = _unused_bed_id()
        network = _free_network()
        bed = Testbed(
            bed_id=bed_id, workdir=workdir, bridge=f"cctlbr{bed_id}", bridge_address=str(network.network_address + 1),
            network=str(network), owner_pid=owner_pid,
            owner_start_time=start_time(owner_pid) if owner_pid is not None else None,
        )
        bed.save()
        try:
            netns.add_bridge(bed.bridge, f"{bed.bridge_address}/{network.prefixlen}")
        except BaseException:
            _destroy_after_failure(bed)
            raise
    try:
        netns.set_link(bed.bridge, up=True)
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
            netns.plug_in(host.netns, host.veth, bed.bridge, f"{host.address}/{network.prefixlen}")
        for host in bed.hosts:
            start_host_sshd(bed, host)
        wait_for_ssh(bed.hosts)
    except BaseException:
        _destroy_after_failure(bed)
        raise
    return bed


def _destroy_after_failure(bed: Testbed) -> None:
    try:
        bed.destroy()
    except TestbedError as exc:  # the original failure is the one to raise
        print(f"warning: cleaning up after a failed build: {exc}", file=sys.stderr)


def _unused_bed_id() -> str:
    for _ in range(100):
        bed_id = secrets.token_hex(2)
        if not netns.link_exists(f"cctlbr{bed_id}") and not (REGISTRY_DIR / f"{bed_id}.json").exists():
            return bed_id
    raise TestbedError("could not find an unused bed id")


def _free_network() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no address or route on this machine overlaps, picked at random.

    Random, so a new bed seldom reuses the addresses (and host keys in someone's known_hosts) of the last.
    """
    used = netns.used_networks()
    free = [
        net for net in BED_NETWORK.subnets(new_prefix=24)
        if net.network_address != BED_NETWORK.network_address and not any(net.overlaps(u) for u in used)
    ]
    if not free:
        raise TestbedError(f"no free /24 left in {BED_NETWORK}; run `python -m testbed prune`")
    return random.choice(free)


# ---- owning a bed ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def destroyed_at_exit(bed: Testbed) -> Iterator[Testbed]:
    """The bed for the block; destroyed when the block ends, and also at interpreter exit or on SIGTERM/SIGHUP
    should the block never end. (A SIGKILL leaves it to ``prune``.)"""
    guard = _CleanupGuard(bed)
    try:
        yield bed
    finally:
        guard.release()
        bed.destroy()


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
