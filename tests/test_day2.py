"""Day-two commands on real clusters: `list` shows every cluster and its state, `exec` runs one
command on every host (locally and over a real sshd), argv never seen by a shell."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from testbed.client_env import SshEnv
from tests.helpers.cluster import clusterctl, local_inventory, wait_until, write_inventory
from tests.helpers.fixtures import SshdTestBed


def start(tmp_path: Path, name: str) -> Path:
    config = write_inventory(tmp_path / f"{name}.yaml", local_inventory(name=name, workers=[
        {"name": "w", "host": "me", "nworkers": 1}]))
    started = clusterctl("up", str(config))
    assert started.exit_code == 0, started.stderr
    return config


def test_list_shows_each_cluster_and_one_whose_processes_are_gone(tmp_path: Path, clusterctl_home: Path) -> None:
    start(tmp_path, "alpha")
    start(tmp_path, "beta")
    beta = clusterctl("status", "--cluster", "beta", "--processes", "--json").json()
    for process in beta["processes"]:  # beta dies without `down`: its state remains
        os.killpg(process["pid"], signal.SIGKILL)
    assert wait_until(lambda: clusterctl("status", "--cluster", "beta").exit_code == 3, timeout=30)

    listed = clusterctl("list", "--json")
    assert listed.exit_code == 0, listed.stderr
    document = listed.json()
    assert document["schema"] == 1 and document["current"] == "beta"
    clusters = {c["name"]: c for c in document["clusters"]}
    assert clusters["alpha"]["state"] == "running" and clusters["alpha"]["answers"] is True
    assert clusters["alpha"]["workers"] == {"present": 1, "expected": 1}
    assert clusters["beta"]["state"] == "gone" and clusters["beta"]["answers"] is False
    assert "clusterctl down --cluster beta" in clusters["beta"]["note"]

    table = clusterctl("list")
    assert "alpha" in table.stdout and "running" in table.stdout
    assert "beta (current)" in table.stdout and "gone" in table.stdout

    assert clusterctl("down", "--cluster", "beta").exit_code == 0
    assert clusterctl("down", "--cluster", "alpha").exit_code == 0
    assert "no clusters" in clusterctl("list").stdout


def test_exec_runs_an_argv_on_every_host_and_reports_each_exit_code(tmp_path: Path, clusterctl_home: Path) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory(workers=[{"name": "w", "host": "me"}]))
    canary = tmp_path / "canary"
    # Words a shell would act on stay literal: no file is created, no variable expanded.
    ran = clusterctl("exec", "--config", str(config), "--", "echo", f"$HOME;touch {canary}", ">", "x")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == f"[me] $HOME;touch {canary} > x"
    assert not canary.exists()
    assert "1 of 1 host(s) succeeded" in ran.stdout

    failed = clusterctl("exec", "--config", str(config), "--json", "--shell", "echo out; echo err >&2; exit 3")
    assert failed.exit_code == 1
    (host,) = failed.json()["hosts"]
    assert host == {"host": "me", "exit_code": 3, "stdout": "out\n", "stderr": "err\n", "error": None}

    missing = clusterctl("exec", "--config", str(config), "--", "no-such-command-here")
    assert missing.exit_code == 1 and "me: command not found: no-such-command-here" in missing.stdout


@pytest.mark.parametrize(("args", "message"), [
    ([], "no command given"),
    (["--limit", "nope*", "--", "true"], "--limit 'nope*' matches no host of the cluster"),
    (["--shell", "true", "--", "true"], "not both"),
])
def test_exec_refuses_bad_input_with_exit_2(tmp_path: Path, clusterctl_home: Path, args: list[str], message: str) -> None:
    config = write_inventory(tmp_path / "c.yaml", local_inventory(workers=[{"name": "w", "host": "me"}]))
    refused = clusterctl("exec", "--config", str(config), *args)
    assert refused.exit_code == 2 and message in refused.stderr, refused.stderr


@pytest.mark.ssh
def test_exec_over_ssh_quotes_every_word_and_limits_hosts(sshd: SshdTestBed, ssh_env: SshEnv, tmp_path: Path) -> None:
    inventory = local_inventory(workers=[{"name": "w", "host": "node1"}])
    inventory["hosts"]["node1"] = sshd.host(run_dir=str(tmp_path / "run"))
    config = write_inventory(tmp_path / "c.yaml", inventory)
    canary = tmp_path / "canary"

    ran = clusterctl("exec", "--config", str(config), "--limit", "node*", "--", "printf", "%s|", "a b", f"$(touch {canary})")
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == f"[node1] a b|$(touch {canary})|"
    assert not canary.exists(), "the remote shell ran a word it should have quoted"
    assert "[me]" not in ran.stdout  # --limit left the local host out

    both = clusterctl("exec", "--config", str(config), "--json", "--", "hostname")
    assert both.exit_code == 0, both.stderr
    assert [h["host"] for h in both.json()["hosts"]] == ["me", "node1"]


def scheduler_task_count(dask_scheduler) -> int:  # type: ignore[no-untyped-def]
    return len(dask_scheduler.tasks)


def test_bench_measures_the_cluster_and_a_local_baseline_and_leaves_no_key(tmp_path: Path, clusterctl_home: Path) -> None:
    from distributed import Client

    start(tmp_path, "b")
    ran = clusterctl("bench", "--tasks", "50", "--repeats", "1", "--transfer-mb", "1", "--json")
    assert ran.exit_code == 0, ran.stderr
    document = ran.json()
    assert document["schema"] == 1 and document["cluster"] == "b"
    for figures in (document["cluster_figures"], document["baseline"]):
        assert figures["overhead_ms"] > 0 and figures["throughput"] > 0 and figures["workers"] >= 1
    assert document["baseline"]["bandwidth_mb_s"] > 0  # two local processes: a transfer is possible
    assert document["cluster_figures"]["bandwidth_mb_s"] is None  # one worker: nothing to move
    assert document["cluster_figures"]["transfer"] == "one worker only: nothing to move"
    with Client(clusterctl("status", "--json").json()["scheduler"]["address"]) as client:
        assert client.run_on_scheduler(scheduler_task_count) == 0, "bench left keys on the scheduler"
    table = clusterctl("bench", "--tasks", "20", "--repeats", "1", "--no-baseline")
    assert table.exit_code == 0, table.stderr
    assert "ms/task" in table.stdout and "LocalCluster" not in table.stdout
    assert "per-task overhead: 20 no-op tasks" in table.stderr  # progress while it runs
    assert clusterctl("down").exit_code == 0
