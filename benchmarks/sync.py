"""The offline environment sync on the bed: a first `clusterctl sync` into hosts whose python is a
bare interpreter (no dask), and a second one with nothing changed, which ships and installs nothing.

The wheel cache is this run's own: the first repetition also rebuilds the wheels from the
distributions installed here, later ones find them in the cache, as a user's second cluster would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.tools import BenchmarkError, console_script, tail

SYNC_HOSTS = ("h1", "h2")  # a scheduler host and a worker host
SYNC_TIMEOUT = 900.0  # seconds; a first sync installs dask and its needs on every host


def bare_python(directory: Path) -> Path:
    """A venv of this machine's base interpreter without pip: a host python with nothing installed."""
    if not (directory / "bin" / "python").exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    return directory / "bin" / "python"


def measure_sync(bed: Any, workdir: Path, rep: int) -> dict[str, float]:
    """Seconds of a first sync and of a no-op second one, on fresh run directories; cleaned after."""
    base = workdir / f"sync-{rep}"
    hosts = {alias: {"run_dir": str(base / alias)} for alias in SYNC_HOSTS}
    inventory = bed.inventory(name="bench-sync", hosts=hosts,
                              defaults={"python": str(bare_python(workdir / "bare"))},
                              environment={"sync": True},
                              scheduler={"host": SYNC_HOSTS[0], "port": 8786, "dashboard_address": None},
                              workers=[{"name": alias, "host": alias} for alias in SYNC_HOSTS[1:]])
    inventory["hosts"] = {alias: inventory["hosts"][alias] for alias in SYNC_HOSTS}
    config = base / "sync.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    env_cache = {"CLUSTERCTL_WHEEL_CACHE": str(workdir / "wheel-cache")}
    try:
        first, first_document = _sync(config, env_cache)
        second, second_document = _sync(config, env_cache)
        if second_document["changed"]:
            raise BenchmarkError(f"a second sync with nothing changed shipped or installed: {second_document}")
        if not first_document["changed"]:
            raise BenchmarkError("the first sync into fresh run directories changed nothing")
    finally:
        subprocess.run([*console_script("clusterctl"), "sync", str(config), "--clean"], capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    return {"first": first, "no-op": second}


def _sync(config: Path, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    import os

    started = time.perf_counter()
    done = subprocess.run([*console_script("clusterctl"), "sync", str(config), "--json"], capture_output=True,
                          text=True, timeout=SYNC_TIMEOUT, stdin=subprocess.DEVNULL, env={**os.environ, **env})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchmarkError(f"clusterctl sync exited {done.returncode}: {tail(done.stderr)}")
    return elapsed, json.loads(done.stdout)
