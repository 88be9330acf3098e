"""The whole story over SSH against a real OpenSSH sshd on 127.0.0.1: up, status, a GPU=3 task
waits, add-worker on the SSH host, the task runs, down leaves nothing; plus preflight and
dry-run behaviour that only SSH hosts have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from testbed.client_env import SshEnv
from testbed.sshd import free_port
from tests.helpers.cluster import PYTHON, REPO, clusterctl, error_lines, group_members, is_running, write_inventory
from tests.helpers.fixtures import SshdTestBed
from tests.test_lifecycle_local import trace_of_constant_matrix

pytestmark = pytest.mark.ssh


def ssh_inventory(sshd: SshdTestBed, run_dir: Path, **defaults: Any) -> dict[str, Any]:
    return {
        "name": "remote",
        "defaults": {"python": PYTHON, "env": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, **defaults},
        "hosts": {"node1": sshd.host(run_dir=str(run_dir))},
        "scheduler": {"host": "node1", "port": free_port(), "dashboard_address": None},
        "workers": [
            {"name": "gpu2", "host": "node1", "nworkers": 2, "resources": {"GPU": 2}},
            {"name": "gpu1", "host": "node1", "resources": "GPU=1"},
        ],
    }


def test_the_whole_story_over_ssh(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    config = write_inventory(tmp_path / "cluster.yaml", ssh_inventory(sshd, tmp_path / "run"))

    started = clusterctl("up", str(config))
    assert started.exit_code == 0, started.stderr
    assert ssh_env.known_hosts.exists(), "accept-new remembers the host key in clusterctl's known_hosts"
    assert (tmp_path / "run" / "scheduler.pid").exists(), "pid files live in the remote run directory"

    document = clusterctl("status", "--json").json()
    assert sorted(w["name"] for w in document["workers"]) == ["gpu1", "gpu2-0", "gpu2-1"]
    assert {w["host"] for w in document["workers"]} == {"node1"}

    with Client(document["scheduler"]["address"], timeout=30) as client:
        waiting = client.submit(trace_of_constant_matrix, 5, resources={"GPU": 3}, pure=False)
        with pytest.raises(TimeoutError):
            waiting.result(timeout=2)
        added = clusterctl("add-worker", "--host", "node1", "--resources", "GPU=3")
        assert added.exit_code == 0, added.stderr
        assert waiting.result(timeout=30) == 15

    processes = json.loads((ssh_env.clusterctl_home / "clusters" / "remote" / "state.json").read_text())["processes"]
    assert {p["name"] for p in processes} == {"scheduler", "gpu2", "gpu1", "node1-add1"}
    down = clusterctl("down")
    assert down.exit_code == 0, down.stderr
    assert not any(is_running(p) for p in processes)
    assert not any(group_members(p["pid"]) for p in processes)
    assert not list((tmp_path / "run").glob("*.pid")), "down removes the remote pid files"


def test_dry_run_prints_the_commands_and_starts_nothing(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    inventory = ssh_inventory(sshd, tmp_path / "run", setup=["source /etc/profile"])
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)), "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "node1" in result.stdout
    assert "distributed.cli.dask_scheduler" in result.stdout and "--nworkers 2" in result.stdout
    assert "source /etc/profile" in result.stdout
    assert not (tmp_path / "run").exists()
    assert not (ssh_env.clusterctl_home / "clusters" / "remote").exists()


def test_a_version_mismatch_is_refused_with_the_table(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    # A stub python on the "remote" side: the real interpreter with an older msgpack's metadata in
    # front (the preflight reads versions from metadata, as distributed's own check does).
    fake = tmp_path / "fake-site" / "msgpack-0.9.9.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: msgpack\nVersion: 0.9.9\n")
    stub = tmp_path / "python-stub"
    stub.write_text(f"#!/bin/sh\nPYTHONPATH={fake.parent} exec {PYTHON} \"$@\"\n")
    stub.chmod(0o755)
    inventory = ssh_inventory(sshd, tmp_path / "run")
    inventory["hosts"]["me"] = {"connection": "local"}
    inventory["scheduler"]["host"] = "me"
    inventory["workers"][1]["python"] = None
    inventory["hosts"]["node1"]["python"] = str(stub)
    config = write_inventory(tmp_path / "c.yaml", inventory)

    refused = clusterctl("up", str(config))
    assert refused.exit_code == 1
    assert "version mismatch with scheduler host me" in refused.stderr
    assert "node1 has msgpack 0.9.9" in refused.stderr
    table = refused.stderr.split("error:")[0]
    assert "msgpack" in table and "0.9.9" in table and "(scheduler)" in table
    assert not (ssh_env.clusterctl_home / "clusters" / "remote").exists(), "nothing was started"
    # node1's agent waited for a start that never came: it ended without starting anything
    assert not list((tmp_path / "run").glob("*.pid")), "nothing was started on node1"


def test_an_unreachable_host_is_one_line_naming_it(ssh_env: SshEnv, tmp_path: Path, sshd: SshdTestBed) -> None:
    inventory = ssh_inventory(sshd, tmp_path / "run")
    inventory["hosts"]["node1"]["port"] = free_port()  # nothing listens there
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)))
    assert result.exit_code == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "node1" in errors[0] and "connection refused" in errors[0]
    assert not (ssh_env.clusterctl_home / "clusters" / "remote").exists()
