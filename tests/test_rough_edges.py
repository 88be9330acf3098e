"""Issue 11, item 5: rough edges a user meets. A taken dashboard port is reported with the port
used instead; `status --watch | head -1` ends quietly with 0; `check` does not claim to check the
port of a host it could not reach."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.helpers.cluster import PYTHON, clusterctl, free_port, local_inventory, write_inventory


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
