"""Issue 11, item 2: `up` on a busy cluster never restarts a healthy worker because the scheduler
had not heard from it yet; only one still absent after a grace is taken for lost, and `up` says why."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.helpers.cluster import clusterctl, local_inventory, wait_until, write_inventory


def test_up_keeps_a_live_worker_that_the_scheduler_has_not_heard_from_yet(tmp_path: Path) -> None:
    # The worker process dies and its nanny (the recorded `dask worker` process, alive throughout)
    # starts it again: for a few seconds, more on a loaded machine, the scheduler lacks a worker
    # whose process lives and is healthy. `up` then must wait for it, not restart it.
    slow = tmp_path / "slow"  # from now on the nanny's worker takes 10 s to start, as under load
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        f"if '--multiprocessing-fork' in sys.argv and os.path.exists({str(slow)!r}):\n"
        "    time.sleep(10)\n")
    inventory = local_inventory("busy", workers=[{"name": "w", "host": "me", "nworkers": 1, "nthreads": 1}])
    inventory["defaults"]["env"]["PYTHONPATH"] += f"{os.pathsep}{site}"
    config = write_inventory(tmp_path / "c.yaml", inventory)
    assert clusterctl("up", str(config)).exit_code == 0
    try:
        home = Path(os.environ["CLUSTERCTL_HOME"])
        nanny = next(p for p in json.loads((home / "clusters/busy/state.json").read_text())["processes"]
                     if p["name"] == "w")
        child = next(pid for pid in children(nanny["pid"])
                     if b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes())
        slow.touch()
        os.kill(child, signal.SIGKILL)
        assert wait_until(lambda: clusterctl("status", "--json").json()["missing"] == ["w"], timeout=20)
        healed = clusterctl("up", str(config), "--json")
        assert healed.exit_code == 0, healed.stderr
        assert "started" not in healed.json(), healed.stdout + healed.stderr
        assert healed.json()["missing"] == [], healed.stdout
    finally:
        assert clusterctl("down").exit_code == 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                pass
    return found
