"""The same environment everywhere, offline, on the test bed (whose hosts have no route out).

The hosts' `python:` is a bare interpreter: a venv of this machine's base python made without pip,
so it has no dask at all. With `environment: {sync: true}`, `up` builds the wheelhouse here (from
the distributions installed here, cached for the session), ships it over SSH, installs it into a
venv under each host's run_dir with `pip install --no-index`, and the lecture's cluster runs. The
tests follow one cluster in order: the first sync, a no-op second `up`, one more package, `down`
and `sync --clean`. Then: a host with another dask, `check --env`, and a python that cannot make a venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from testbed import Testbed
from testbed.client_env import SshEnv
from tests.helpers.cluster import (
    REPO,
    CliResult,
    clusterctl,
    kill_recorded,
    kill_running,
    local_inventory,
    pid_file_records,
    write_inventory,
)
from tests.workloads import trace_of_constant_matrix

pytestmark = pytest.mark.netns

CLUSTER = "synced"
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # workers import tests.workloads


def isolated_env(base: Path) -> dict[str, str | None]:
    """No real ~/.ssh, no real clusterctl home, for a whole module."""
    return SshEnv.under(base).variables()


def kill_what_pid_files_name(run_dirs: dict[str, Path]) -> None:
    """The safety net after `down`: SIGKILL whatever a pid file in ``run_dirs`` still names."""
    kill_running(pid_file_records(path for run_dir in run_dirs.values() for path in run_dir.glob("*.pid")))
OLDER_DASK = "2026.1.0" if metadata.version("dask") != "2026.1.0" else "2025.1.0"


def make_bare_python(directory: Path) -> Path:
    """A python with nothing installed: a venv of this machine's base interpreter, without pip."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    assert subprocess.run([python, "-c", "import dask"], capture_output=True).returncode != 0, "not bare"
    return python


def make_python_with_older_dask(directory: Path) -> Path:
    """This machine's packages, except that the metadata says dask is older (what the fingerprint
    reads, as distributed's own version check does): a host that someone upgraded by hand."""
    python = make_bare_python(directory)
    site = next((directory / "lib").glob("python*/site-packages"))
    (site / "here.pth").write_text(str(Path(metadata.distribution("dask").locate_file(""))) + "\n")
    fake = site / f"dask-{OLDER_DASK}.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dask\nVersion: {OLDER_DASK}\n")
    return python


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel cache for the session: every wheelhouse after the first is built from it."""
    return tmp_path_factory.mktemp("wheel-cache")


@dataclass
class Synced:
    bed: Testbed
    env: dict[str, str]
    config: Path
    run_dirs: dict[str, Path]
    first: dict[str, Any]  # `up --json` of the first sync
    inventory: dict[str, Any]

    def cli(self, *args: str) -> CliResult:
        return clusterctl(*args, env=self.env, timeout=600)

    def venv_python(self, alias: str) -> Path:
        return self.run_dirs[alias] / "venv" / "bin" / "python"


LECTURE_WORKERS = [
    {"name": "gpu2", "host": "h2", "nworkers": 2, "nthreads": 1, "resources": {"GPU": 2}},
    {"name": "gpu1", "host": "h3", "nworkers": 1, "nthreads": 1, "resources": {"GPU": 1}},
]


def bed_inventory(bed: Testbed, run_dirs: dict[str, Path], python: Path | str, **sections: Any) -> dict[str, Any]:
    hosts = {alias: {"run_dir": str(run_dir)} for alias, run_dir in run_dirs.items()}
    return bed.inventory(hosts=hosts, defaults={"python": str(python), "env": WORKER_ENV}, **sections)


@pytest.fixture(scope="module")
def synced(testbed: Testbed, wheel_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    base = tmp_path_factory.mktemp("synced")
    env = {**isolated_env(base), "CLUSTERCTL_WHEEL_CACHE": str(wheel_cache)}
    run_dirs = {alias: base / alias / "run" for alias in ("h1", "h2", "h3")}
    inventory = bed_inventory(testbed, run_dirs, make_bare_python(base / "bare"), name=CLUSTER,
                              environment={"sync": True, "packages": ["numpy"]},
                              scheduler={"host": "h1", "port": 8786, "dashboard_address": None},
                              workers=LECTURE_WORKERS)
    inventory["hosts"] = {alias: inventory["hosts"][alias] for alias in run_dirs}  # three hosts are enough
    config = write_inventory(base / "cluster.yaml", inventory)
    try:
        started = clusterctl("up", str(config), "--json", env=env, timeout=900)
        assert started.exit_code == 0, started.stderr
        yield Synced(testbed, env, config, run_dirs, started.json(), inventory)
    finally:
        clusterctl("down", "--cluster", CLUSTER, env=env)
        kill_recorded(Path(env["CLUSTERCTL_HOME"]))
        kill_what_pid_files_name(run_dirs)



def test_bare_hosts_get_the_environment_and_the_lecture_runs_with_equal_versions(synced: Synced) -> None:
    environment = synced.first["environment"]
    assert {h["host"]: h["installed"] for h in environment["hosts"]} == {"h1": True, "h2": True, "h3": True}
    assert all(h["shipped_bytes"] > 1_000_000 for h in environment["hosts"])
    (requirements,) = environment["wheelhouses"].values()  # one platform, one wheelhouse
    assert f"dask=={metadata.version('dask')}" in requirements and f"numpy=={metadata.version('numpy')}" in requirements
    # Every process runs its host's venv python.
    state = json.loads((Path(synced.env["CLUSTERCTL_HOME"]) / "clusters" / CLUSTER / "state.json").read_text())
    assert {p["host"]: p["argv"][0] for p in state["processes"]} == {
        alias: str(synced.venv_python(alias)) for alias in ("h1", "h2", "h3")}

    address = synced.first["scheduler"]["address"]
    with Client(address, timeout=30) as client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.wait_for_workers(3, timeout=30)
        versions = client.get_versions(check=True)
        futures = [client.submit(trace_of_constant_matrix, m, resources={"GPU": 2}, pure=False) for m in range(11)]
        assert client.gather(futures) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert not [w for w in caught if "Mismatched versions" in str(w.message)], [str(w.message) for w in caught]
    assert versions["scheduler"]["packages"]["dask"] == metadata.version("dask")


def test_a_second_up_ships_nothing_installs_nothing_and_says_so(synced: Synced) -> None:
    again = synced.cli("up", str(synced.config), "--json")
    assert again.exit_code == 0, again.stderr
    document = again.json()
    environment = document["environment"]
    assert environment["changed"] is False
    assert [(h["shipped_bytes"], h["installed"]) for h in environment["hosts"]] == [(0, False)] * 3
    assert document.get("started") in (None, []), "the running processes were kept"
    # What keeps it cheap: one agent call per host, nothing sent, nothing installed.
    human = synced.cli("-v", "sync", str(synced.config))
    assert human.exit_code == 0, human.stderr
    assert "nothing shipped, nothing installed" in human.stdout
    calls = [line for line in human.stderr.splitlines() if line.startswith("→ ")]
    assert sorted(line.split(":")[0] for line in calls) == ["→ h1", "→ h2", "→ h3"], calls
    assert all('"op": "sync_prepare"' in line for line in calls), calls


def test_adding_a_package_ships_only_its_wheel(synced: Synced) -> None:
    added = "mdurl"  # small, pure python, installed here (rich needs it), not needed by dask
    assert added not in synced.first["environment"]["wheelhouses"][next(iter(synced.first["environment"]["wheelhouses"]))]
    inventory = {**synced.inventory, "environment": {"sync": True, "packages": ["numpy", added]}}
    write_inventory(synced.config, inventory)
    result = synced.cli("up", str(synced.config), "--json")
    assert result.exit_code == 0, result.stderr
    hosts = result.json()["environment"]["hosts"]
    assert {h["host"]: [name.split("-")[0] for name in h["shipped"]] for h in hosts} == {
        "h1": [added], "h2": [added], "h3": [added]}
    assert all(h["installed"] for h in hosts)
    probe = subprocess.run([synced.venv_python("h2"), "-c", f"import {added}"], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    # The processes imported the old environment: all were started again, and the workers have it now.
    assert sorted(result.json()["started"]) == ["gpu1", "gpu2", "scheduler"]
    with Client(result.json()["scheduler"]["address"], timeout=30) as client:
        client.wait_for_workers(3, timeout=30)
        found = client.run(lambda: __import__("importlib.metadata").metadata.version("mdurl"))
    assert set(found.values()) == {metadata.version(added)}


def test_down_keeps_the_venv(synced: Synced) -> None:
    down = synced.cli("down", "--cluster", CLUSTER)
    assert down.exit_code == 0, down.stderr
    assert all(synced.venv_python(alias).exists() for alias in synced.run_dirs), "the venv is a cache"


def test_check_looks_at_the_synced_venvs_once_down(synced: Synced, tmp_path: Path) -> None:
    checked = synced.cli("check", str(synced.config), "--json")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    hosts = checked.json()["hosts"]
    assert {h["host"]: (h["checks"]["versions"]["status"], h["versions"]["dask"]) for h in hosts} == {
        alias: ("ok", metadata.version("dask")) for alias in ("h1", "h2", "h3")}

    # Hosts not synced yet: their bare python passes (it can make the venv), versions wait for the sync.
    fresh = {**synced.inventory, "hosts": {alias: {**settings, "run_dir": str(tmp_path / alias)}
                                           for alias, settings in synced.inventory["hosts"].items()}}
    before = synced.cli("check", str(write_inventory(tmp_path / "fresh.yaml", fresh)), "--json")
    assert before.exit_code == 0, before.stdout + before.stderr
    for host in before.json()["hosts"]:
        assert host["checks"]["python"]["status"] == "ok"
        assert host["checks"]["versions"] == {"status": "skipped", "hint": None,
                                              "reason": "not synced yet: `clusterctl sync` (or `up`) installs the environment"}
    assert not list(tmp_path.glob("h*")), "check creates nothing on the hosts"


def test_sync_clean_removes_the_venv_and_the_wheels(synced: Synced) -> None:
    clean = synced.cli("sync", str(synced.config), "--clean")
    assert clean.exit_code == 0, clean.stderr
    assert not any((run_dir / "venv").exists() or (run_dir / "wheels").exists() for run_dir in synced.run_dirs.values())


def test_a_host_with_another_dask_is_refused_with_the_table_and_fixed_by_sync(
        testbed: Testbed, wheel_cache: Path, tmp_path: Path) -> None:
    env = {**isolated_env(tmp_path), "CLUSTERCTL_WHEEL_CACHE": str(wheel_cache)}
    run_dirs = {alias: tmp_path / alias / "run" for alias in ("h1", "h4")}
    inventory = bed_inventory(testbed, run_dirs, sys.executable, name="mixed",
                              scheduler={"host": "h1", "port": 8786, "dashboard_address": None},
                              workers=[{"name": "w", "host": "h4", "nworkers": 1, "nthreads": 1}])
    inventory["hosts"] = {alias: inventory["hosts"][alias] for alias in run_dirs}
    inventory["hosts"]["h4"]["python"] = str(make_python_with_older_dask(tmp_path / "older"))
    config = write_inventory(tmp_path / "cluster.yaml", inventory)
    try:
        refused = clusterctl("up", str(config), env=env)
        assert refused.exit_code == 1
        assert f"h4 has dask {OLDER_DASK} (scheduler host: {metadata.version('dask')})" in refused.stderr
        table = refused.stderr.split("error:")[0]
        assert "dask" in table and OLDER_DASK in table and "(scheduler)" in table
        assert not (Path(env["CLUSTERCTL_HOME"]) / "clusters" / "mixed").exists(), "nothing was started"

        write_inventory(config, {**inventory, "environment": {"sync": True}})
        fixed = clusterctl("up", str(config), "--json", env=env, timeout=900)
        assert fixed.exit_code == 0, fixed.stderr
        assert [w["name"] for w in fixed.json()["workers"]] == ["w"]
    finally:
        down = clusterctl("down", "--cluster", "mixed", env=env)
        kill_recorded(Path(env["CLUSTERCTL_HOME"]))
        kill_what_pid_files_name(run_dirs)
    assert down.exit_code == 0, down.stderr


def test_check_env_shows_the_matrix_and_this_machine_differing_is_a_warning(testbed: Testbed, tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    run_dirs = {alias: tmp_path / alias / "run" for alias in ("h1", "h2")}
    older = make_python_with_older_dask(tmp_path / "older")  # on both hosts: they agree, this machine differs
    inventory = bed_inventory(testbed, run_dirs, older, name="matrix",
                              scheduler={"host": "h1", "port": 8786, "dashboard_address": None},
                              workers=[{"name": "w", "host": "h2"}])
    inventory["hosts"] = {alias: inventory["hosts"][alias] for alias in run_dirs}
    config = write_inventory(tmp_path / "cluster.yaml", inventory)

    human = clusterctl("check", str(config), "--env", env=env)
    assert human.exit_code == 0, human.stdout + human.stderr
    header = next(line for line in human.stdout.splitlines() if line.startswith("package"))
    assert header.split() == ["package", "h1", "(scheduler)", "h2", "this", "machine"]
    dask_row = next(line for line in human.stdout.splitlines() if line.startswith("dask "))
    assert dask_row.split() == ["dask", OLDER_DASK, OLDER_DASK, metadata.version("dask")]
    assert (f"warning: this machine has dask {metadata.version('dask')}, the scheduler host h1 has {OLDER_DASK}"
            in human.stderr)

    document = clusterctl("check", str(config), "--env", "--json", env=env).json()
    assert document["ok"] is True
    assert document["environment"]["this_machine"]["dask"] == metadata.version("dask")
    assert {h["host"]: h["versions"]["dask"] for h in document["hosts"]} == {"h1": OLDER_DASK, "h2": OLDER_DASK}
    assert len(document["warnings"]) == 1 and "dask" in document["warnings"][0]


def test_a_python_that_cannot_make_a_venv_is_a_clear_error_and_nothing_starts(
        wheel_cache: Path, tmp_path: Path, clusterctl_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCTL_WHEEL_CACHE", str(wheel_cache))
    inventory = local_inventory(workers=[{"name": "w", "host": "me"}])
    inventory["hosts"]["me"]["run_dir"] = str(tmp_path / "run")
    inventory["environment"] = {"sync": True}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "venv").write_text("a file where the venv should go\n")
    result = clusterctl("up", str(write_inventory(tmp_path / "c.yaml", inventory)), timeout=600)
    assert result.exit_code == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "me:" in error and "cannot create a venv" in error, result.stderr
    assert "hint:" in result.stderr
    assert not list(clusterctl_home.glob("clusters/*/state.json")), "nothing was started"
