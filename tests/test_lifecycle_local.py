"""The lecture's story on this machine, through the real CLI and real dask processes:
up, status, GPU=2 tasks land on GPU=2 workers, a GPU=3 task waits, add-worker, it runs, down."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from tests.helpers.cluster import clusterctl, error_lines, is_running, local_inventory, write_inventory


def trace_of_constant_matrix(m: int) -> int:
    return int(np.trace(np.random.randint(low=m, high=m + 1, size=(4, 3))))


@pytest.fixture
def inventory_file(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "cluster.yaml", local_inventory())


def read_state(home: Path, name: str = "t") -> dict:
    return json.loads((home / "clusters" / name / "state.json").read_text())


def test_the_lecture_story(inventory_file: Path, clusterctl_home: Path) -> None:
    started = clusterctl("up", str(inventory_file))
    assert started.exit_code == 0, started.stderr
    assert "3/3 workers registered" in started.stderr  # progress as plain lines without a TTY

    status = clusterctl("status", "--json")
    assert status.exit_code == 0, status.stderr
    document = status.json()
    assert document["cluster"] == "t" and document["missing"] == []
    assert {w["name"]: w["resources"] for w in document["workers"]} == {
        "gpu1": {"GPU": 1.0}, "gpu2-0": {"GPU": 2.0}, "gpu2-1": {"GPU": 2.0}}
    assert all(w["host"] == "me" and w["nthreads"] == 1 for w in document["workers"])
    assert next(w for w in document["workers"] if w["name"] == "gpu1")["memory_limit"] == 2_000_000_000
    address = document["scheduler"]["address"]

    env = clusterctl("env")
    assert env.stdout.strip() == f"export DASK_SCHEDULER_ADDRESS={address}"

    with Client(address, timeout=30) as client:
        futures = [client.submit(trace_of_constant_matrix, m, resources={"GPU": 2}, pure=False) for m in range(11)]
        assert client.gather(futures) == [3 * m for m in range(11)]
        gpu2_addresses = {w["address"] for w in document["workers"] if w["resources"] == {"GPU": 2.0}}
        ran_on = set().union(*client.who_has(futures).values())
        assert ran_on and ran_on <= gpu2_addresses

        waiting = client.submit(trace_of_constant_matrix, 7, resources={"GPU": 3}, pure=False)
        client.wait_for_workers(3, timeout=5)
        with pytest.raises(TimeoutError):
            waiting.result(timeout=2)
        assert waiting.status == "pending"

        added = clusterctl("add-worker", "--resources", "GPU=3", "--json")
        assert added.exit_code == 0, added.stderr
        # The inventory calls this machine `me`: so does the added worker, not `localhost`.
        assert added.json()["extra"] == ["me-add1"]
        assert next(w for w in added.json()["workers"] if w["name"] == "me-add1")["host"] == "me"
        assert waiting.result(timeout=30) == 21

    second = clusterctl("add-worker", "--resources", "GPU=1", "--json")
    assert second.exit_code == 0, second.stderr
    removed = clusterctl("remove-worker", "me-add2", "--json")
    assert removed.exit_code == 0, removed.stderr
    pid = next(p["pid"] for p in read_state(clusterctl_home)["processes"] if p["name"] == "me-add1")
    assert removed.json()["schema"] == 1
    assert removed.json()["removed"] == ["me-add2"]
    [stopped] = removed.json()["stopped"]
    assert stopped["host"] == "me" and stopped["name"] == "me-add2" and isinstance(stopped["pid"], int)

    state_before_down = read_state(clusterctl_home)
    assert len(state_before_down["processes"]) == 4
    down = clusterctl("down", "--json")
    assert down.exit_code == 0, down.stderr
    assert down.json()["schema"] == 1 and down.json()["cluster"] == "t"
    assert {"host": "me", "name": "me-add1", "pid": pid} in down.json()["stopped"]
    assert not any(is_running(p) for p in state_before_down["processes"])
    assert not (clusterctl_home / "clusters" / "t").exists()
    # `down` closes through the scheduler, which closes its workers: nothing is retired (no worker stays
    # to take their data); only remove-worker's me-add2 was.
    scheduler_log = Path(next(p["log"] for p in state_before_down["processes"] if p["role"] == "scheduler"))
    lines = scheduler_log.read_text().splitlines()
    assert any("Closing scheduler" in line for line in lines)
    assert len([line for line in lines if "Retired worker" in line]) == 1, lines

    again = clusterctl("down")
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip() in ("no current cluster: nothing to do", "cluster t is not running: nothing to do")


def test_up_twice_starts_nothing_twice(inventory_file: Path, clusterctl_home: Path) -> None:
    assert clusterctl("up", str(inventory_file)).exit_code == 0
    pids = sorted(p["pid"] for p in read_state(clusterctl_home)["processes"])
    second = clusterctl("up", str(inventory_file))
    assert second.exit_code == 0, second.stderr
    assert "nothing to start" in second.stdout
    assert sorted(p["pid"] for p in read_state(clusterctl_home)["processes"]) == pids
    assert clusterctl("down", str(inventory_file)).exit_code == 0


def test_status_exit_codes_follow_health(inventory_file: Path, clusterctl_home: Path) -> None:

    from tests.helpers.cluster import wait_until

    assert clusterctl("up", str(inventory_file)).exit_code == 0
    processes = {p["name"]: p for p in read_state(clusterctl_home)["processes"]}

    os.killpg(processes["gpu1"]["pid"], signal.SIGKILL)  # the whole `dask worker` tree of one group
    assert wait_until(lambda: clusterctl("status").exit_code == 1, timeout=30)
    degraded = clusterctl("status", "--json", "--processes")
    assert degraded.json()["missing"] == ["gpu1"]
    assert {p["name"]: p["alive"] for p in degraded.json()["processes"]}["gpu1"] is False

    os.killpg(processes["scheduler"]["pid"], signal.SIGKILL)
    assert wait_until(lambda: not is_running(processes["scheduler"]), timeout=10)
    gone = clusterctl("status")
    assert gone.exit_code == 3
    assert "does not answer" in gone.stdout

    down = clusterctl("down")  # still stops every worker, by pid
    assert down.exit_code == 0, down.stderr
    assert not any(is_running(p) for p in processes.values())


def test_a_worker_that_cannot_start_is_named_with_its_log(tmp_path: Path, clusterctl_home: Path) -> None:
    inventory = local_inventory(workers=[
        {"name": "ok", "host": "me"},
        {"name": "broken", "host": "me", "setup": ["echo 'ImportError: no GPU driver here' >&2", "exit 3"]},
    ])
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)), "--timeout", "30")
    assert result.exit_code == 1
    first_error_line = error_lines(result.stderr)[0]
    assert "me: worker broken (pid" in first_error_line and "exited during start-up" in first_error_line
    assert "ImportError: no GPU driver here" in result.stderr  # the log's tail is shown
    # Nothing half-started is left behind, and no state pretends otherwise.
    assert not (clusterctl_home / "clusters" / "t" / "state.json").exists()
    assert clusterctl("status", "--cluster", "t").exit_code == 1


def test_a_missing_python_is_a_one_line_error_and_starts_nothing(tmp_path: Path, clusterctl_home: Path) -> None:
    inventory = local_inventory()
    inventory["defaults"]["python"] = "/nonexistent/python3"
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-2].startswith("error: me: ")
    assert "/nonexistent/python3" in result.stderr
    assert not (clusterctl_home / "clusters" / "t").exists()


def test_add_worker_rejects_bad_options_before_starting_anything(inventory_file: Path, clusterctl_home: Path) -> None:
    assert clusterctl("up", str(inventory_file)).exit_code == 0
    for args, expected in [
        (["--resources", "GPU=-1"], "--resources"),
        (["--resources", "1GPU=2"], "--resources"),
        (["--nthreads", "0"], "--nthreads"),
        (["--name", "gpu1"], "already used"),
        (["--host", "bad host!"], "--host"),
    ]:
        result = clusterctl("add-worker", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert expected in result.stderr
    assert len(read_state(clusterctl_home)["processes"]) == 3
    assert clusterctl("down").exit_code == 0


def test_down_without_state_finds_local_processes_by_pid_files_outside_clusterctl_home(
        inventory_file: Path, clusterctl_home: Path) -> None:
    """`connection: local` hosts have the same default run_dir as remote ones (~/.clusterctl/<name>),
    not under CLUSTERCTL_HOME: deleting that home loses no pid file, and `down CONFIG` stops and
    verifies every process by pid (exit 0)."""
    import shutil

    assert clusterctl("up", str(inventory_file)).exit_code == 0
    processes = read_state(clusterctl_home)["processes"]
    shutil.rmtree(clusterctl_home)
    try:
        down = clusterctl("down", str(inventory_file))
        assert down.exit_code == 0, down.stderr
        assert "3 process(es) stopped" in down.stdout + down.stderr, down.stdout + down.stderr
        assert not any(is_running(p) for p in processes)
    finally:
        for process in processes:  # the conftest's safety net lost its state with the home: kill by pid here
            if is_running(process):
                os.killpg(process["pid"], signal.SIGKILL)
