"""clusterctl from Python, as a Dask user meets it: `Cluster(path)`, `Client(cluster)`, `from_name`, `close`, `down`.

Each story runs in fresh Python processes, as a notebook would: one process starts the cluster
and computes, a second attaches by name and sees the same workers, and the cluster outlives both
until `down()` stops every process, verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from clusterctl.errors import InvalidInputError, SchedulerUnreachableError
from tests.helpers.cluster import PYTHON, REPO, clusterctl, free_port, is_running, local_inventory, write_inventory


def python(code: str, timeout: float = 180) -> Any:
    """Run ``code`` in a fresh interpreter (this test's environment); its last stdout line, as JSON."""
    done = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def recorded(home: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((home / "clusters" / name / "state.json").read_text())["processes"]


def test_import_clusterctl_imports_no_distributed_until_a_cluster_is_made() -> None:
    found = python("""
        import json, sys
        import clusterctl
        listed = clusterctl.list_clusters()
        light = "distributed" not in sys.modules
        clusterctl.Cluster
        print(json.dumps([light, [c.name for c in listed.clusters], "distributed" in sys.modules]))
    """)
    assert found == [True, [], True]


def test_a_cluster_made_in_one_process_computes_is_attached_from_another_and_outlives_close(
        tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory("api", workers=[
        {"name": "w", "host": "me", "nworkers": 2, "nthreads": 1}]))
    first = python(f"""
        import json
        from distributed import Client
        from clusterctl import Cluster
        cluster = Cluster({str(config)!r})
        with Client(cluster) as client:
            total = client.submit(sum, range(10)).result()
            names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
        html = cluster._repr_html_()  # what Jupyter shows; no kernel here
        cluster.close()
        print(json.dumps({{"address": cluster.scheduler_address, "total": total, "names": names, "html": html,
                          "repr": repr(cluster)}}))
    """)
    assert first["total"] == 45 and first["names"] == ["w-0", "w-1"]
    assert "Cluster" in first["html"] and "api" in first["html"] and "Workers" in first["html"]
    assert first["repr"].startswith("Cluster(api, 'tcp://127.0.0.1:")
    assert clusterctl("status", "--cluster", "api").exit_code == 0, "close() detached: the cluster still runs"

    second = python("""
        import json
        from distributed import Client
        from clusterctl import Cluster
        cluster = Cluster.from_name("api")
        cluster.wait_for_workers(2, timeout=30)
        with Client(cluster) as client:
            doubled = client.submit(lambda x: 2 * x, 21).result()
        names = sorted(w["name"] for w in cluster.scheduler_info["workers"].values())
        logs = cluster.get_logs()
        cluster.close()
        print(json.dumps({"address": cluster.scheduler_address, "names": names, "doubled": doubled,
                          "logs": sorted(logs)[:2], "link": cluster.dashboard_link}))
    """)
    assert second.pop("logs") == ["Cluster", "Scheduler"]
    assert second == {"address": first["address"], "names": ["w-0", "w-1"], "doubled": 42, "link": ""}

    processes = recorded(clusterctl_home, "api")
    assert all(is_running(p) for p in processes)
    gone = python("""
        import json
        from clusterctl import Cluster
        print(json.dumps([vars(p) for p in Cluster.from_name("api").down().stopped]))
    """)
    assert len(gone) == len(processes) == 2  # the scheduler and the `dask worker` process
    assert {p["pid"] for p in gone} == {p["pid"] for p in processes}
    assert not any(is_running(p) for p in processes)
    assert not (clusterctl_home / "clusters" / "api").exists()


def test_shutdown_on_close_takes_the_cluster_down_when_the_with_block_ends(
        tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory("once", workers=[{"name": "w", "host": "me"}]))
    pids = python(f"""
        import json
        from clusterctl import Cluster
        with Cluster.up({str(config)!r}, shutdown_on_close=True) as cluster:
            pids = [p["pid"] for p in json.load(open({str(clusterctl_home)!r} + "/clusters/once/state.json"))["processes"]]
        print(json.dumps(pids))
    """)
    assert len(pids) == 2 and not any(is_running({"pid": pid}) for pid in pids)
    assert clusterctl("list", "--json").json()["clusters"] == []


def test_a_bad_inventory_raises_the_error_the_command_line_prints(tmp_path: Path) -> None:
    inventory = local_inventory("bad")
    inventory["workers"][0]["nthreads"] = 0
    config = write_inventory(tmp_path / "c.yaml", inventory)
    from clusterctl import Cluster

    with pytest.raises(InvalidInputError) as caught:
        Cluster(config)
    printed = clusterctl("up", str(config))
    assert printed.exit_code == 2 and printed.stderr.splitlines()[0] == f"error: {caught.value.message}"


def test_attaching_to_a_cluster_whose_scheduler_is_gone_is_one_clear_error(clusterctl_home: Path) -> None:
    from clusterctl import Cluster, state
    from clusterctl.inventory import parse_inventory

    inventory = parse_inventory("name: ghost\nhosts: {me: {connection: local}}\nscheduler: {host: me}\n")
    address = f"tcp://127.0.0.1:{free_port()}"
    state.save(state.ClusterState("ghost", inventory, None, address, None))
    started = time.monotonic()
    with pytest.raises(SchedulerUnreachableError) as caught:
        Cluster.from_name("ghost")
    assert caught.value.message.startswith(f"scheduler at {address} does not answer")
    assert time.monotonic() - started < 25, "asked first, not after distributed's 30 s connect timeout"
