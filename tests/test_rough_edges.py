"""Issue 11, item 5: rough edges a user meets. A taken dashboard port is reported with the port
used instead; `status --watch | head -1` ends quietly with 0; `check` does not claim to check the
port of a host it could not reach."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed.client_env import SshEnv
from tests.helpers.cluster import (
    PYTHON,
    WORKER_ENV,
    clusterctl,
    free_port,
    is_running,
    kill_running,
    local_inventory,
    pid_file_records,
    write_inventory,
)


def test_a_taken_dashboard_port_is_a_warning_naming_both_ports_and_watch_into_head_ends_with_0(
        tmp_path: Path) -> None:
    dashboard = free_port()
    inventory = local_inventory("edges", workers=[{"name": "w", "host": "me", "nworkers": 1, "nthreads": 1}],
                                dashboard_address=f"127.0.0.1:{dashboard}")
    config = write_inventory(tmp_path / "c.yaml", inventory)
    try:
        with socket.create_server(("127.0.0.1", dashboard)):
            started = clusterctl("up", str(config))
        assert started.exit_code == 0, started.stderr
        warning = next((line for line in started.stderr.splitlines() if "dashboard port" in line), "")
        assert warning.startswith("warning:") and f"port {dashboard} was taken" in warning, started.stderr
        used = int(warning.split("listens on port ")[1].split()[0])
        assert used != dashboard

        watch = subprocess.Popen([PYTHON, "-m", "clusterctl", "status", "--watch", "0.2"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert watch.stdout is not None and watch.stdout.readline()
        watch.stdout.close()  # what `head -1` does after its line
        _, stderr = watch.communicate(timeout=30)
        assert (watch.returncode, stderr) == (0, b"")
    finally:
        assert clusterctl("down").exit_code == 0


def test_check_does_not_say_it_checks_the_port_of_a_host_it_could_not_reach(tmp_path: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", {
        "name": "unreached", "hosts": {"far": {"address": "127.0.0.1", "port": free_port(), "host_key_policy": "accept-new"}},
        "scheduler": {"host": "far", "port": free_port()}, "workers": [{"name": "w", "host": "far"}]})
    result = clusterctl("check", str(config))
    assert result.exit_code == 1
    assert "checking port" not in result.stdout + result.stderr, result.stderr


@pytest.mark.ssh
def test_a_worker_added_on_a_bare_address_is_stopped_by_down_config_without_local_state(
        sshd_factory: Any, sshd_client_key: tuple[Path, str], ssh_env: SshEnv, tmp_path: Path) -> None:
    """`add-worker --host ADDRESS` on a host the inventory does not name; the local state is then lost.
    `down CONFIG` must still find that worker: the scheduler's host keeps a note of the address."""
    name = "outside"
    homes = {which: tmp_path / f"home-{which}" for which in ("inside", "outside")}
    servers = {}
    for which, home in homes.items():
        home.mkdir()
        servers[which] = sshd_factory(address=f"127.0.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 2}",
                                      extra_config=f"SetEnv HOME={home}")
    (ssh_env.home / ".ssh").mkdir(exist_ok=True)
    (ssh_env.home / ".ssh" / "known_hosts").write_text("".join(s.known_hosts_line() for s in servers.values()))
    bare = servers["outside"]  # reached through the user's ssh config, as a bare address would be
    ssh_env.ssh_config.write_text(f"Host {bare.address}\n    Port {bare.port}\n    User root\n"
                                  f"    IdentityFile {sshd_client_key[0]}\n")
    inside = servers["inside"]
    config = write_inventory(tmp_path / "c.yaml", {
        "name": name, "defaults": {"python": PYTHON, "env": WORKER_ENV},
        "hosts": {"node1": {"address": inside.address, "port": inside.port, "user": "root",
                            "identity_file": str(sshd_client_key[0])}},
        "scheduler": {"host": "node1", "dashboard_address": None},
        "workers": [{"name": "w1", "host": "node1"}],
    })
    run_dirs = {which: home / ".clusterctl" / name for which, home in homes.items()}
    try:
        assert clusterctl("up", str(config)).exit_code == 0
        added = clusterctl("add-worker", "--host", bare.address, "--json")
        assert added.exit_code == 0, added.stderr
        outside = pid_file_records(run_dirs["outside"].glob("*.pid"))
        assert [p["name"] for p in outside] == [f"{bare.address}-add1"] and all(is_running(p) for p in outside)

        shutil.rmtree(ssh_env.clusterctl_home / "clusters" / name)  # the local state is lost
        down = clusterctl("down", str(config))
        assert down.exit_code == 0, down.stderr
        assert not list(run_dirs["outside"].glob("*.pid")) and not any(is_running(p) for p in outside), down.stdout
    finally:
        kill_running(pid_file_records(path for run_dir in run_dirs.values() for path in run_dir.glob("*.pid")))
