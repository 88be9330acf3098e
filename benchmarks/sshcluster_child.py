"""Start distributed's SSHCluster as a user would, in a python process of its own, so that its start-up
time counts the imports just as `clusterctl up`'s does.

    python -m benchmarks.sshcluster_child SPEC_JSON

Prints ``ready`` once every worker is registered, then waits for a line on stdin; closes the client
and the cluster; prints ``closed``. Its log lines go to stderr.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    from distributed import Client
    from distributed.deploy.ssh import SSHCluster

    cluster = SSHCluster(
        spec["hosts"],
        connect_options={"known_hosts": None, "client_keys": [spec["key"]], "username": "root"},
        worker_options={"n_workers": spec["nworkers"], "nthreads": spec["nthreads"]},
        # The host, as clusterctl passes it: without a default route dask would pick 127.0.0.1.
        scheduler_options={"host": spec["hosts"][0], "port": spec["port"], "dashboard": False},
        remote_python=sys.executable,
    )
    try:
        client = Client(cluster)
        client.wait_for_workers(spec["workers"], timeout=spec["timeout"])
        print("ready", flush=True)
        sys.stdin.readline()
        client.close()
    finally:
        cluster.close()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
