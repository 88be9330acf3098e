"""What a bed is: its hosts, the bridge they hang on, the client key every sshd trusts; how it is recorded
(``describe``/``load``/``save``), the inventories that reach it, and what a test does to one host.

The network work is netns.py's; this module says which namespace, cable or sshd, and keeps the records.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed import netns
from testbed.errors import TestbedError
from testbed.proc import start_time
from testbed.sshd import Sshd, start_sshd

SSH_PORT = 22
STATE_FILE = "testbed.json"
REGISTRY_DIR = Path("/run/clusterctl-testbed")  # a record of every bed, so that `prune` finds it after a crash
READY_TIMEOUT_SECONDS = 15.0


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

    @property
    def registry_path(self) -> Path:
        return REGISTRY_DIR / f"{self.bed_id}.json"

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
        return netns.run_in(self.host(host).netns, argv, timeout=timeout, check=check)

    def popen_in(self, host: BedHost | str, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start ``argv`` in the background inside the host; stdout (with stderr) is a text pipe.

        Returns once the process is in the host's namespace, so ``pids_in`` sees it at once.
        """
        return netns.popen_in(self.host(host).netns, argv)

    def pids_in(self, host: BedHost | str) -> list[int]:
        """Processes living in the host's network namespace, except its sshd and sshd's own session processes."""
        host = self.host(host)
        return netns.pids_in(host.netns, host.sshd_pid)

    def wait_for_no_pids(self, host: BedHost | str, timeout: float = 10.0) -> list[int]:
        """Wait until ``pids_in(host)`` is empty; the pids still there at the deadline ([] on success)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids_in(host)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    # ---- faults ------------------------------------------------------------------------------------

    def link_down(self, host: BedHost | str) -> None:
        """Unplug the host's cable: nothing reaches it or leaves it until ``link_up``; its processes live on."""
        netns.set_link(self.host(host).veth, up=False)

    def link_up(self, host: BedHost | str) -> None:
        netns.set_link(self.host(host).veth, up=True)

    def stop_sshd(self, host: BedHost | str) -> None:
        """Stop the host's sshd; processes started over SSH keep running."""
        host = self.host(host)
        if host.sshd is not None:
            host.sshd.stop()
        elif host.sshd_pid is not None:
            netns.terminate([host.sshd_pid], netns.namespace_key(host.netns))
        host.sshd, host.sshd_pid = None, None
        self.save()

    def start_sshd(self, host: BedHost | str) -> None:
        """(Re)start the host's sshd on its address, port 22, with the same host key as before."""
        host = self.host(host)
        if host.sshd is not None:
            raise TestbedError(f"{host.alias}: sshd is already running (pid {host.sshd_pid})")
        start_host_sshd(self, host)
        wait_for_ssh([host])

    # ---- records -------------------------------------------------------------------------------------

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
        _write_atomically(self.registry_path, text)

    def exists(self) -> bool:
        """Whether any of the bed's bridge, veths or namespaces is still there."""
        return netns.link_exists(self.bridge) or any(
            netns.link_exists(h.veth) or netns.namespace_exists(h.netns) for h in self.hosts
        )

    def is_stale(self) -> bool:
        """The owning process is gone (beds from ``up`` have no owner and are never stale)."""
        if self.owner_pid is None:
            return False
        return start_time(self.owner_pid) != self.owner_start_time

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
            key = netns.namespace_key(host.netns)
            if key is not None:
                survivors = netns.empty_namespace(key)
                if survivors:
                    problems.append(f"{host.alias}: processes {survivors} survived SIGKILL")
            host.sshd_pid = None
            problems += [f"{host.alias}: {problem}" for problem in netns.unplug(host.netns, host.veth)]
        problems += netns.remove_bridge(self.bridge)
        if self.exists():
            problems.append("some of the bridge, veths or namespaces are still there")
        if problems:
            raise TestbedError(f"test bed {self.bed_id}: " + "; ".join(problems))
        for path in (self.state_path, self.registry_path):
            path.unlink(missing_ok=True)


# ---- a host's sshd ---------------------------------------------------------------------------------------


def start_host_sshd(bed: Testbed, host: BedHost) -> None:
    """Start the host's sshd on its address, port 22, trusting the bed's client key; keeps its host key."""
    assert bed.client_public_key is not None
    existing_key = host.host_key_path if host.host_key_path.exists() else None
    host.sshd = start_sshd(
        host.sshd_dir, address=host.address, port=SSH_PORT, authorized_keys=[bed.client_public_key],
        netns=host.netns, host_key_path=existing_key,
    )
    host.sshd_pid = host.sshd.pid
    bed.save()


def wait_for_ssh(hosts: Sequence[BedHost], timeout: float = READY_TIMEOUT_SECONDS) -> None:
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


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
