"""What a newcomer meets first, through the real CLI and a real local cluster: the lecture's tasks
waiting on a GPU=3 worker in `status`, worker tables at 80 and 120 columns, exit codes when the
output goes to a reader that has gone (`| head -1`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from tests.helpers.cluster import PYTHON, REPO, clusterctl, free_port, local_inventory, module_cluster, write_inventory
from tests.workloads import trace_of_constant_matrix

CLUSTER = "newcomer"


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The lecture's cluster for the whole module."""
    inventory = local_inventory(name=CLUSTER, dashboard_address=f":{free_port()}")
    with module_cluster(tmp_path_factory.mktemp("newcomer"), inventory) as env:
        yield env


def scheduler_address(env: dict[str, str]) -> str:
    return clusterctl("status", "--json", env=env).json()["scheduler"]["address"]


def test_status_shows_the_tasks_that_wait_for_a_gpu3_worker(cluster_env: dict[str, str]) -> None:
    with Client(scheduler_address(cluster_env), timeout=30) as client:
        done = client.submit(trace_of_constant_matrix, 1, resources={"GPU": 1}, pure=False)
        assert done.result(timeout=30) == 3
        waiting = [client.submit(trace_of_constant_matrix, m, resources={"GPU": 3}, pure=False) for m in range(30)]

        shown = clusterctl("status", env=cluster_env)
        assert shown.exit_code == 0, shown.stderr  # every worker is there: the cluster is healthy
        lines = shown.stdout.splitlines()
        assert "tasks      30 waiting, 0 processing, 1 in memory, 0 erred" in lines
        assert "! 30 task(s) wait for GPU=3, which no worker offers; to run them:" in lines
        assert "  clusterctl add-worker --resources GPU=3" in lines

        document = clusterctl("status", "--json", env=cluster_env).json()
        assert document["tasks"] == {"waiting": 30, "processing": 0, "in_memory": 1, "erred": 0}
        assert document["waiting_on_resources"] == [
            {"tasks": 30, "resources": {"GPU": 3.0}, "command": "clusterctl add-worker --resources GPU=3"}]
        client.cancel(waiting)
        del waiting, done

    document = clusterctl("status", "--json", env=cluster_env).json()
    assert document["waiting_on_resources"] == []
    assert "wait for" not in clusterctl("status", env=cluster_env).stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_the_worker_table_fits_the_terminal_and_cuts_no_name_or_address(cluster_env: dict[str, str],
                                                                        columns: int) -> None:
    workers = clusterctl("status", "--json", env=cluster_env).json()["workers"]
    shown = clusterctl("status", env={**cluster_env, "COLUMNS": str(columns)})
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns, shown.stdout
    for worker in workers:
        row = next(line for line in lines if line.startswith(worker["name"] + " "))
        assert worker["address"] in row.split(), (worker, shown.stdout)
        if columns == 120:  # one row per worker, every column on it
            assert row.split()[-2:] == ["0", "0"], row
    with_pids = clusterctl("status", "--processes", env={**cluster_env, "COLUMNS": str(columns)}).stdout
    assert max(len(line) for line in with_pids.splitlines()) <= columns and "…" not in with_pids, with_pids
    gpu1 = next(line for line in lines if line.startswith("gpu1 "))
    details = lines[lines.index(gpu1) + 1] if columns == 80 else gpu1
    assert " / 2 GB" in details, "memory_limit: 2GB shows as the user wrote it"


# --- a reader that has gone: `clusterctl status | head -1` -----------------------------------------


def with_closed_reader(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run clusterctl with stdout a pipe whose reading end is already closed: every write fails."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([PYTHON, "-m", "clusterctl", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("status", "--processes"), ("logs",),
                                  ("logs", "-n", "3"), ("env",), ("env", "--json"), ("--help",)])
def test_a_closed_pipe_exits_as_the_command_would_and_quietly(cluster_env: dict[str, str],
                                                              args: tuple[str, ...]) -> None:
    expected = clusterctl(*args, env=cluster_env).exit_code
    done = with_closed_reader(*args, env=cluster_env)
    assert done.returncode == expected == 0, done.stderr
    assert done.stderr == ""


def test_head_1_gets_the_first_line_and_the_exit_code_of_status(cluster_env: dict[str, str]) -> None:
    for args in ("status", "status --json", "logs", "status --watch", "logs -f"):
        shell = subprocess.run(["bash", "-c", f'{sys.executable} -m clusterctl {args} | head -1; '
                                "echo \"exit=${PIPESTATUS[0]}\""], capture_output=True, text=True, timeout=120,
                               env={**os.environ, **cluster_env})
        assert shell.stdout.splitlines()[-1] == "exit=0", (args, shell.stdout, shell.stderr)
        assert len(shell.stdout.splitlines()) == 2, (args, shell.stdout)
        assert [line for line in shell.stderr.splitlines() if not line.startswith("following ")] == [], shell.stderr


# --- small things ------------------------------------------------------------------------------------


def test_dashboard_of_a_scheduler_on_this_machine_prints_the_url_and_exits(cluster_env: dict[str, str]) -> None:
    expected = clusterctl("status", "--json", env=cluster_env).json()["scheduler"]["dashboard"]
    port = expected.rsplit(":", 1)[1].split("/")[0]
    shown = clusterctl("dashboard", env=cluster_env, timeout=30)  # it used to wait for Ctrl-C
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout == f"dashboard: http://127.0.0.1:{port}/status\n"


def test_make_up_shows_the_status_once() -> None:
    planned = subprocess.run(["make", "-n", "-C", str(REPO), "up"], capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    commands = [line for line in planned.stdout.splitlines() if "/clusterctl " in line]
    assert len(commands) == 1 and commands[0].endswith(" up configs/local.yaml"), commands


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_ctrl_c_leaves_no_spinner_on_the_terminal(tmp_path: Path) -> None:
    inventory = local_inventory(name="hang", workers=[])
    inventory["hosts"]["me"]["setup"] = ["sleep 20"]  # the preflight waits here: time to press Ctrl-C
    config = write_inventory(tmp_path / "hang.yaml", inventory)
    session = f"cctl-{uuid.uuid4().hex[:8]}"
    command = (f"CLUSTERCTL_HOME={tmp_path / 'home'} {PYTHON} -m clusterctl up {config}; echo EXIT=$?; sleep 30")
    subprocess.run(["tmux", "new", "-d", "-x", "80", "-y", "24", "-s", session, "-c", str(REPO), command],
                   check=True, timeout=30)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                  timeout=30).stdout

        deadline = time.monotonic() + 60
        while "checking 1 host(s)" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "⠿ checking 1 host(s)" in screen()
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True, timeout=30)
        while "EXIT=" not in screen() and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = [line for line in screen().splitlines() if line.strip()]
        assert lines == ["interrupted", "EXIT=130"], lines
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
