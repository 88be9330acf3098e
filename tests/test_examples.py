"""The examples in examples/ run as users run them: `clusterctl up`, `eval $(clusterctl env)`, then
`python examples/X.py` with a plain `Client()`, against a local cluster with GPU=2 and GPU=1 workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import REPO, clusterctl, local_inventory, module_cluster, write_inventory

CLUSTER = "examples"
EXAMPLES = REPO / "examples"
# What a user types, in a shell whose PATH has the venv's bin (clusterctl, python) first.
SHELL = f'eval "$(clusterctl env --cluster {CLUSTER})" && exec python "$@"'


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local cluster running for the whole module; PATH finds this interpreter's clusterctl."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with module_cluster(tmp_path_factory.mktemp("examples"), local_inventory(name=CLUSTER), PATH=path) as env:
        yield env


def example(name: str, *args: str) -> list[str]:
    """The argv that runs ``examples/<name>`` the way its docstring says."""
    return ["bash", "-c", SHELL, "bash", str(EXAMPLES / name), *args]


def run_example(env: dict[str, str], name: str, *args: str, timeout: float = 90) -> str:
    done = subprocess.run(example(name, *args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL, cwd=REPO)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_resources_runs_gpu2_tasks_only_on_the_gpu2_workers(cluster_env: dict[str, str]) -> None:
    output = run_example(cluster_env, "resources.py")
    lines = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    traces = "[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]"
    assert lines["GPU=2 traces"] == traces
    assert set(lines["GPU=2 tasks ran on"].split(", ")) <= {"gpu2-0", "gpu2-1"}
    assert lines["GPU=1 traces"] == traces
    assert set(lines["GPU=1 tasks ran on"].split(", ")) <= {"gpu1", "gpu2-0", "gpu2-1"}


def test_add_worker_waits_until_a_gpu3_worker_is_added(cluster_env: dict[str, str]) -> None:
    process = subprocess.Popen(example("add_worker.py", "--timeout", "60"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, **cluster_env},
                               stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        assert process.stdout is not None
        shown = [process.stdout.readline() for _ in range(3)]
        assert shown[0].startswith("submitted 100 tasks that need GPU=3"), shown
        assert "no worker has GPU=3: the tasks wait" in shown[1], shown
        assert shown[2].strip() == "clusterctl add-worker --resources GPU=3"
        assert process.poll() is None, "it waits"

        added = clusterctl("add-worker", "--cluster", CLUSTER, "--resources", "GPU=3", env=cluster_env)
        assert added.exit_code == 0, added.stderr
        rest, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, rest + errors
    assert "100 kernels computed on me-add1; 100 match the local computation" in rest


def test_word_count_agrees_with_the_sequential_count(cluster_env: dict[str, str]) -> None:
    output = run_example(cluster_env, "word_count.py", "--documents", "2000").splitlines()
    assert output[0].startswith("2000 documents from ")
    sequential = next(line for line in output if line.startswith("sequential:")).split()[1]
    distributed = next(line for line in output if line.startswith("distributed:")).split()[1]
    assert int(sequential) == int(distributed) > 10_000
    assert output[-1] == "the counts agree"


def test_the_notebook_starts_computes_adapts_detaches_and_takes_the_cluster_down(
        tmp_path: Path, clusterctl_home: Path) -> None:
    inventory = local_inventory("notebook", workers=[{"name": "fixed", "host": "me", "nthreads": 1}])
    inventory["elastic"] = {"hosts": ["me"], "worker": {"nthreads": 1}, "minimum": 1, "maximum": 4}
    config = write_inventory(tmp_path / "elastic.yaml", inventory)
    done = subprocess.run([sys.executable, str(EXAMPLES / "notebook.py")], capture_output=True, text=True,
                          timeout=300, cwd=REPO, stdin=subprocess.DEVNULL,
                          env={**os.environ, "CLUSTERCTL_CONFIG": str(config), "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("started notebook at tcp://127.0.0.1:") and lines[0].endswith("with 1 worker(s)")
    assert lines[1] == f"sum of squares: {sum(x * x for x in range(100))}"
    peak = int(lines[2].split("up to ")[1].split()[0])
    assert 2 <= peak <= 4, lines[2]
    assert lines[3:] == ["back to 1 worker(s)", "detached; clusters here: notebook", "attached again: True",
                         "down: 2 process(es) stopped and verified gone"]  # the scheduler and `fixed`
    assert clusterctl("list", "--json").json()["clusters"] == []
