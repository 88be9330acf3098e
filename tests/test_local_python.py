"""Issue 11, item 4: a local host without `python:` runs the interpreter clusterctl runs under, so
the README's commands work as typed even when the `python3` on PATH has no distributed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.helpers.cluster import REPO, clusterctl, free_port

# A PATH whose python3 (the system's) cannot import distributed, as a user's shell outside `make`.
BARE_PATH = {"PATH": "/usr/bin:/bin"}


def bare_python3_lacks_distributed() -> bool:
    return subprocess.run(["/usr/bin/python3", "-c", "import distributed"], capture_output=True).returncode != 0


def on_free_ports(source: Path, target: Path) -> Path:
    """The file as shipped, with only its ports changed (8786 may be another test's)."""
    inventory = yaml.safe_load(source.read_text())
    inventory["scheduler"].update(port=free_port(), dashboard_address=None)
    inventory["defaults"] = {**(inventory.get("defaults") or {}), "env": {"OMP_NUM_THREADS": "1"}}
    target.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return target


def test_configs_local_yaml_and_the_readme_add_worker_run_clusterctls_own_python(tmp_path: Path) -> None:
    assert bare_python3_lacks_distributed(), "the test needs a python3 on PATH without distributed"
    config = on_free_ports(REPO / "configs" / "local.yaml", tmp_path / "local.yaml")
    started = clusterctl("up", str(config), env=BARE_PATH)
    try:
        assert started.exit_code == 0, started.stderr
        added = clusterctl("add-worker", "--resources", "GPU=3", env=BARE_PATH)  # the README's lecture step
        assert added.exit_code == 0, added.stderr
    finally:
        assert clusterctl("down", env=BARE_PATH).exit_code == 0


def test_the_init_starter_runs_as_written_on_this_machine(tmp_path: Path) -> None:
    starter = tmp_path / "cluster.yaml"
    assert clusterctl("init", str(starter), env=BARE_PATH).exit_code == 0
    config = on_free_ports(starter, tmp_path / "starter.yaml")
    started = clusterctl("up", str(config), env=BARE_PATH)
    try:
        assert started.exit_code == 0, started.stderr
    finally:
        assert clusterctl("down", env=BARE_PATH).exit_code == 0


def test_a_local_python_without_distributed_is_named_with_the_one_that_has_it(tmp_path: Path) -> None:
    import sys

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "nodist", "defaults": {"python": "/usr/bin/python3"}, "hosts": {"me": {"connection": "local"}},
        "scheduler": {"host": "me", "port": free_port(), "dashboard_address": None},
        "workers": [{"name": "w", "host": "me"}]}))
    result = clusterctl("up", str(config))
    assert result.exit_code == 1
    assert f"set `python: {sys.executable}` for this host (it has distributed" in result.stderr, result.stderr
