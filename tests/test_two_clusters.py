"""Issue 11, item 0: a cluster only ever talks to its own scheduler. Two clusters on one host, the
second given the first one's port: it refuses before starting anything, and no command of one
cluster ever retires or closes the other's scheduler or workers."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from distributed import Client

from tests.helpers.cluster import clusterctl, free_port, is_running, local_inventory, wait_until, write_inventory


def workers_of(address: str) -> set[str]:
    with Client(address, timeout=10) as client:
        return {w["name"] for w in client.scheduler_info()["workers"].values()}


def one_worker(name: str) -> list[dict]:
    return [{"name": name, "host": "me", "nworkers": 1, "nthreads": 1}]


def test_up_on_the_port_of_another_cluster_refuses_before_starting_anything(tmp_path: Path) -> None:
    ours = local_inventory("first", workers=one_worker("a"))
    port = ours["scheduler"]["port"]
    first = write_inventory(tmp_path / "first.yaml", ours)
    second = write_inventory(tmp_path / "second.yaml", {**local_inventory("second", workers=one_worker("b")),
                                                        "scheduler": {**ours["scheduler"]}})
    assert clusterctl("up", str(first)).exit_code == 0
    address = f"tcp://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        refused = clusterctl("up", str(second))
        assert refused.exit_code == 1, refused.stderr
        assert time.monotonic() - began < 30
        # Refused in the check (the scheduler host answers it with its versions), before anything starts.
        assert "starting" not in refused.stderr and "waiting" not in refused.stderr, "refused before anything started"
        assert f"port {port} is in use" in refused.stderr and "cluster 'first'" in refused.stderr, refused.stderr
        assert "scheduler.port" in refused.stderr and "nothing was started" in refused.stderr
        assert clusterctl("status", "--cluster", "second").exit_code != 0, "the refused cluster left no state"
        assert not list((Path(os.environ["HOME"]) / ".clusterctl" / "second").glob("*.pid"))
        down = clusterctl("down", str(second))
        assert down.exit_code in (0, 1), down.stderr
        assert workers_of(address) == {"a"}, "the other cluster's down touched nothing of ours"
    finally:
        assert clusterctl("down", "--cluster", "first").exit_code == 0


def test_a_port_held_by_a_program_that_is_not_dask_fails_fast_naming_the_port_and_its_key(tmp_path: Path) -> None:
    inventory = local_inventory("held", workers=one_worker("w"))
    port = inventory["scheduler"]["port"]
    with socket.create_server(("127.0.0.1", port)):
        began = time.monotonic()
        result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)))
        took = time.monotonic() - began
    assert result.exit_code == 1, result.stderr
    assert took < 15, f"{took:.1f}s to see a taken port"  # generous: a loaded machine; 0da862a waited the timeout
    assert "starting" not in result.stderr and "waiting" not in result.stderr, "refused before anything started"
    assert f"port {port} is in use on me" in result.stderr and "`scheduler.port`" in result.stderr, result.stderr
    assert "full log" not in result.stderr, "nothing started: no log to point at"


def test_a_scheduler_of_another_cluster_at_our_address_is_never_retired_closed_or_joined(tmp_path: Path) -> None:
    """Ours dies; another cluster's scheduler takes its port. status, add-worker, remove-worker, up and
    down of ours see that it is not ours, and leave it and its workers alone."""
    port = free_port()
    mine = local_inventory("mine", workers=one_worker("m"))
    mine["scheduler"]["port"] = port
    other = local_inventory("other", workers=one_worker("o"))
    other["scheduler"]["port"] = port
    mine_file, other_file = write_inventory(tmp_path / "mine.yaml", mine), write_inventory(tmp_path / "o.yaml", other)
    assert clusterctl("up", str(mine_file)).exit_code == 0
    scheduler = next(p for p in read_processes("mine") if p["role"] == "scheduler")
    os.killpg(scheduler["pid"], signal.SIGKILL)
    assert wait_until(lambda: not is_running(scheduler), timeout=10)
    address = f"tcp://127.0.0.1:{port}"
    try:
        started = clusterctl("up", str(other_file))
        assert started.exit_code == 0, started.stderr
        assert wait_until(lambda: workers_of(address) == {"o"}, timeout=30)

        status = clusterctl("status", "--cluster", "mine")
        assert status.exit_code != 0 and "not this cluster's" in status.stdout + status.stderr
        added = clusterctl("add-worker", "--cluster", "mine", "--name", "x")
        assert added.exit_code == 1 and "cluster 'other'" in added.stderr, added.stderr
        removed = clusterctl("remove-worker", "--cluster", "mine", "m")
        assert removed.exit_code in (0, 1), removed.stderr
        again = clusterctl("up", str(mine_file))
        assert again.exit_code == 1 and f"port {port} is in use" in again.stderr, again.stderr
        down = clusterctl("down", "--cluster", "mine")
        assert down.exit_code in (0, 1), down.stderr
        assert workers_of(address) == {"o"}, "another cluster's scheduler and workers are untouched"
    finally:
        assert clusterctl("down", "--cluster", "other").exit_code == 0
        clusterctl("down", str(mine_file))


def read_processes(cluster: str) -> list[dict]:
    import json

    home = Path(os.environ["CLUSTERCTL_HOME"])
    return json.loads((home / "clusters" / cluster / "state.json").read_text())["processes"]
