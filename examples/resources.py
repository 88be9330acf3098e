"""Worker resources, as in the lecture: tasks that ask for GPU=2 run only on workers that have GPU=2.

Computes the traces of the 11 matrices ``np.random.randint(low=m, high=m+1, size=(4, 3))``, m = 0..10,
once with ``resources={'GPU': 2}`` (only the GPU=2 workers qualify) and once with ``{'GPU': 1}`` (every
worker with at least one GPU does), and prints which workers ran them. The traces are 0, 3, ..., 30.

Needs a cluster with a GPU=2 and a GPU=1 worker group, such as configs/local.yaml::

    clusterctl up configs/local.yaml
    eval $(clusterctl env)          # DASK_SCHEDULER_ADDRESS: a plain Client() connects to the cluster
    python examples/resources.py
    clusterctl down

The resources are labels the workers were started with (``--resources GPU=2``); dask counts them,
it does not look for real GPUs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from distributed import Client, get_task_stream


def workers_with(client: Client, resources: dict[str, float]) -> list[str]:
    """Names of the workers that have at least ``resources``."""
    return sorted(
        str(info.get("name", address))
        for address, info in client.scheduler_info()["workers"].items()
        if all(info.get("resources", {}).get(name, 0) >= amount for name, amount in resources.items())
    )


def run_traces(client: Client, matrices: list[Any], resources: dict[str, float]) -> tuple[list[int], list[str]]:
    """The traces, computed on workers that have ``resources``, and the names of the workers that ran them."""
    with get_task_stream(client) as stream:
        futures = [client.submit(np.trace, matrix, resources=resources, pure=False) for matrix in matrices]
        traces = [int(trace) for trace in client.gather(futures)]
    keys = {future.key for future in futures}
    names = {address: info.get("name", address) for address, info in client.scheduler_info()["workers"].items()}
    ran_on = sorted({str(names.get(task["worker"], task["worker"])) for task in stream.data if task["key"] in keys})
    return traces, ran_on


def main() -> int:
    if not os.environ.get("DASK_SCHEDULER_ADDRESS"):
        print("no cluster: run `eval $(clusterctl env)` first (after `clusterctl up CONFIG`)", file=sys.stderr)
        return 1
    matrices = [np.random.randint(low=m, high=m + 1, size=(4, 3)) for m in range(11)]
    with Client(timeout=30) as client:
        print(f"connected to {client.scheduler.address}")
        for resources in ({"GPU": 2}, {"GPU": 1}):
            label = " ".join(f"{name}={amount:g}" for name, amount in resources.items())
            if not workers_with(client, resources):  # the tasks would wait forever
                print(f"no worker has {label}: start the cluster of configs/local.yaml, or add one with\n"
                      f"    clusterctl add-worker --resources {label}", file=sys.stderr)
                return 1
            traces, ran_on = run_traces(client, matrices, resources)
            print(f"{label} traces: {traces}")
            print(f"{label} tasks ran on: {', '.join(ran_on)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
