"""Tasks that need a resource no worker has wait; `clusterctl add-worker` brings one, and they run.

Submits 100 polynomial-kernel tasks (the lecture's ``(M @ M.T + 1) ** 2`` of random 4x3 matrices)
that each need ``GPU=3``. If no worker has that much, it says which command to run and waits::

    clusterctl up configs/local.yaml
    eval $(clusterctl env)
    python examples/add_worker.py
    # it waits; in another terminal:
    clusterctl add-worker --resources GPU=3
    # the tasks run, and the example prints the results

Options: ``--tasks N`` (default 100), ``--timeout SECONDS`` (give up after that long; default: wait
until interrupted). Exits 0 once every result has arrived and matches a local computation, 1 on timeout.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from distributed import Client, wait

RESOURCES = {"GPU": 3}


def compute_polynomial_kernel(matrix: np.ndarray) -> np.ndarray:
    return np.power(np.dot(matrix, matrix.T) + 1, 2)


def workers_with(client: Client, resources: dict[str, float]) -> list[str]:
    """Names of the workers that have at least ``resources``."""
    return sorted(
        str(info.get("name", address))
        for address, info in client.scheduler_info()["workers"].items()
        if all(info.get("resources", {}).get(name, 0) >= amount for name, amount in resources.items())
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="how many tasks to submit (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the results")
    args = parser.parse_args(argv)
    if not os.environ.get("DASK_SCHEDULER_ADDRESS"):
        print("no cluster: run `eval $(clusterctl env)` first (after `clusterctl up CONFIG`)", file=sys.stderr)
        return 1

    label = " ".join(f"{name}={amount:g}" for name, amount in RESOURCES.items())
    matrices = [np.random.rand(4, 3) for _ in range(args.tasks)]
    with Client(timeout=30) as client:
        futures = [client.submit(compute_polynomial_kernel, matrix, resources=RESOURCES, pure=False)
                   for matrix in matrices]
        print(f"submitted {len(futures)} tasks that need {label}", flush=True)
        able = workers_with(client, RESOURCES)
        if able:
            print(f"workers with {label}: {', '.join(able)}", flush=True)
        else:
            print(f"no worker has {label}: the tasks wait. In another terminal, run:\n"
                  f"    clusterctl add-worker --resources {label}", flush=True)
        try:
            wait(futures, timeout=args.timeout)
        except TimeoutError:
            done = sum(future.done() for future in futures)
            print(f"gave up after {args.timeout:g}s: {done} of {len(futures)} tasks done", file=sys.stderr)
            client.cancel(futures)
            return 1
        kernels = client.gather(futures)
        names = {address: str(info.get("name", address)) for address, info in client.scheduler_info()["workers"].items()}
        ran_on = sorted({names.get(address, address) for held in client.who_has(futures).values() for address in held})
    pairs = zip(kernels, matrices, strict=True)
    matching = sum(np.allclose(kernel, compute_polynomial_kernel(matrix)) for kernel, matrix in pairs)
    print(f"{len(kernels)} kernels computed on {', '.join(ran_on)}; {matching} match the local computation")
    print(f"the first kernel:\n{kernels[0]}")
    return 0 if matching == len(kernels) else 1


if __name__ == "__main__":
    sys.exit(main())
