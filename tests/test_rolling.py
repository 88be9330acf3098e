"""`up --rolling` on a real cluster under load: every group's env changes, one group at a time
restarts, no persisted partition is recomputed, workers never drop below the bound, and a broken
group halts the roll with the groups not yet reached untouched."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client

from testbed.sshd import free_port
from tests.helpers.cluster import clusterctl, local_inventory, write_inventory

GROUPS = ["a", "b", "c"]
WORKERS_PER_GROUP = 2


def inventory(env_value: str, broken: str | None = None, port: int | None = None) -> dict[str, Any]:
    workers = [{"name": name, "host": "me", "nworkers": WORKERS_PER_GROUP, "nthreads": 1,
                "env": {"ROLL": env_value}} for name in GROUPS]
    for group in workers:
        if group["name"] == broken:
            group["python"] = "/nonexistent/python3"
    return local_inventory(name="roll", workers=workers, port=port or PORT)


PORT = free_port()  # one scheduler port for every version of the inventory: only the workers change


def count_call(block: Any, counter: str) -> Any:
    with open(counter, "a") as handle:  # one line per partition computed
        handle.write("x\n")
    return block


def worker_pids(status: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in status["processes"] if p["role"] == "worker"}


def test_rolling_keeps_the_data_and_the_worker_bound(tmp_path: Path, clusterctl_home: Path) -> None:
    import dask.array as da

    config = write_inventory(tmp_path / "roll.yaml", inventory("one"))
    assert clusterctl("up", str(config)).exit_code == 0
    address = clusterctl("status", "--json").json()["scheduler"]["address"]
    before = worker_pids(clusterctl("status", "--processes", "--json").json())
    counter = tmp_path / "computed"
    with Client(address) as client:
        array = da.ones((200, 100), chunks=(1, 100)).map_blocks(count_call, counter=str(counter),
                                                                meta=np.array((), dtype=float))
        array = array.persist()
        assert float(array.sum().compute()) == 20000.0
        assert len(counter.read_text().splitlines()) == 200

        low = [len(GROUPS) * WORKERS_PER_GROUP]
        done = threading.Event()

        def watch() -> None:  # the fewest workers the scheduler had during the roll
            while not done.is_set():
                low[0] = min(low[0], len(client.scheduler_info()["workers"]))
                done.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        write_inventory(config, inventory("two"))
        rolled = clusterctl("up", str(config), "--rolling")
        done.set()
        watcher.join()
        assert rolled.exit_code == 0, rolled.stderr
        assert "rolled 3 worker group(s), at most 1 at a time" in rolled.stdout
        assert low[0] >= (len(GROUPS) - 1) * WORKERS_PER_GROUP, f"workers dropped to {low[0]}"

        assert float(array.sum().compute()) == 20000.0
        assert len(counter.read_text().splitlines()) == 200, "a persisted partition was recomputed"
        after = worker_pids(clusterctl("status", "--processes", "--json").json())
        assert set(after) == set(before) and all(after[g] != before[g] for g in GROUPS), "every group restarted"

        envs = client.run(lambda: __import__("os").environ.get("ROLL"))
        assert set(envs.values()) == {"two"}

    again = clusterctl("up", str(config), "--rolling")
    assert again.exit_code == 0 and "nothing to roll" in again.stdout
    assert clusterctl("down").exit_code == 0


def test_a_broken_group_halts_the_roll_and_leaves_the_rest_running(tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "roll.yaml", inventory("one"))
    assert clusterctl("up", str(config)).exit_code == 0
    before = worker_pids(clusterctl("status", "--processes", "--json").json())

    write_inventory(config, inventory("two", broken="b"))
    halted = clusterctl("up", str(config), "--rolling")
    assert halted.exit_code == 1
    assert "rolling halted at worker group b" in halted.stderr
    assert "not reached, still on their old configuration: c" in halted.stderr
    after = worker_pids(clusterctl("status", "--processes", "--json").json())
    assert after["a"] != before["a"], "a, before the broken group, was rolled"
    assert after["c"] == before["c"], "c, after the broken group, was touched"
    assert "b" not in after
    assert clusterctl("down").exit_code == 0


def test_rolling_refuses_what_it_cannot_do(tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "roll.yaml", inventory("one"))
    refused = clusterctl("up", str(config), "--rolling", "--restart")
    assert refused.exit_code == 2 and "exclude each other" in refused.stderr
    nothing = clusterctl("up", str(config), "--rolling")
    assert nothing.exit_code == 1 and "no running scheduler: there is nothing to roll" in nothing.stderr


def test_a_changed_scheduler_restarts_everything_and_says_so(tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "roll.yaml", inventory("one"))
    assert clusterctl("up", str(config)).exit_code == 0
    before = worker_pids(clusterctl("status", "--processes", "--json").json())
    write_inventory(config, inventory("one", port=free_port()))
    restarted = clusterctl("up", str(config), "--rolling")
    assert restarted.exit_code == 0, restarted.stderr
    assert "restarted the scheduler and 3 worker group(s)" in restarted.stdout
    assert "loses its in-memory state" in restarted.stderr
    after = worker_pids(clusterctl("status", "--processes", "--json").json())
    assert all(after[g] != before[g] for g in GROUPS)
    assert clusterctl("down").exit_code == 0
