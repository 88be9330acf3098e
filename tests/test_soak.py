"""Issue 11, item 3: a soak on the multi-host bed. Each cycle: `up`, `add-worker` on a random host,
a client computing and holding data, `kill -9` of a random worker, nanny or the scheduler, `up`
(heals), `remove-worker`, `down`; then nothing of the cluster is left on any host: no process, no
pid file, no state. `make test` runs a short soak (SOAK_CYCLES, default 5); `make soak CYCLES=100`
the full one. It prints cycles done, faults injected and leftovers found (must be 0)."""

from __future__ import annotations

import contextlib
import os
import random
import signal

from distributed import Client

from tests.helpers.cluster import wait_until
from tests.test_faults import HOSTS, MakeCluster, bed_cluster, worker_children  # noqa: F401 (a fixture)

CYCLES = int(os.environ.get("SOAK_CYCLES", "5"))


def test_soak_cycles_with_faults_leave_nothing_behind(bed_cluster: MakeCluster) -> None:  # noqa: F811
    seed = int(os.environ.get("SOAK_SEED", random.randrange(1 << 30)))
    chance = random.Random(seed)
    cluster = bed_cluster("soak")
    faults: dict[str, int] = {}
    leftovers: list[str] = []
    done = 0
    try:
        for cycle in range(CYCLES):
            where = f"cycle {cycle} (SOAK_SEED={seed})"
            started = cluster.up()
            assert started.exit_code == 0, (where, started.stderr)
            address = started.json()["scheduler"]["address"]
            host = chance.choice(HOSTS[1:])
            added = cluster.cli("add-worker", str(cluster.config), "--host", host, "--timeout", "60")
            assert added.exit_code == 0, (where, added.stderr)
            with contextlib.suppress(OSError, TimeoutError):
                client = Client(address, timeout=20)
                held = client.map(lambda x: x * x, range(50), pure=False)  # computed, and held on the workers
                assert sum(client.gather(held)) == sum(x * x for x in range(50))

            pids = cluster.pids()
            fault = chance.choice(["worker", "nanny", "scheduler"])
            victim_name = chance.choice([n for n in pids if n != "scheduler"]) if fault != "scheduler" else "scheduler"
            victim = next(p for p in (cluster.state() or {})["processes"] if p["name"] == victim_name)
            victims = (worker_children(cluster.bed, victim["host"], victim["pid"]) if fault == "worker" else []) \
                or [victim["pid"]]
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            faults[fault] = faults.get(fault, 0) + 1
            with contextlib.suppress(Exception):
                client.close(timeout=5)

            healed = cluster.up()
            assert healed.exit_code == 0 and healed.json()["missing"] == [], (where, fault, healed.stderr)
            added_name = next(name for name in cluster.pids() if "-add" in name)
            removed = cluster.cli("remove-worker", "--cluster", cluster.name, added_name)
            assert removed.exit_code == 0, (where, removed.stderr)
            down = cluster.down()
            assert down.exit_code == 0, (where, down.stderr)

            left = cluster.leftovers()
            if left or cluster.pid_files() or cluster.state() is not None:
                leftovers.append(f"{where}: processes {left}, pid files {cluster.pid_files()}, "
                                 f"state {'kept' if cluster.state() else 'gone'}")
                break
            done += 1
    finally:
        print(f"\nsoak: {done} cycle(s) done, {sum(faults.values())} fault(s) injected {faults}, "
              f"{len(leftovers)} leftover(s) found")
    assert leftovers == [], leftovers
    assert done == CYCLES
    assert wait_until(lambda: cluster.leftovers() == {}, timeout=5)
