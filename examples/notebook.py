# %% [markdown]
# # clusterctl from a notebook: start, compute, adapt, detach
#
# Cells in the `# %%` format (VS Code, Jupytext, Spyder run them one by one); it also runs as a script:
#
#     python examples/notebook.py                      # uses configs/elastic.yaml
#     CLUSTERCTL_CONFIG=cluster.yaml python examples/notebook.py
#
# The inventory needs an `elastic:` section (see configs/elastic.yaml) for `scale` and `adapt`.

# %%
import os
import time

from distributed import Client, wait

import clusterctl

CONFIG = os.environ.get("CLUSTERCTL_CONFIG", "configs/elastic.yaml")

# %% [markdown]
# ## Start
# `Cluster(path)` is `clusterctl up`: the same preflight and state, and the same errors, raised as
# `clusterctl.errors.ClusterctlError`. On a running cluster it reconciles and attaches. In Jupyter,
# `cluster` on its own line shows Dask's cluster widget.

# %%
cluster = clusterctl.Cluster(CONFIG)
client = Client(cluster)
print(f"started {cluster.name} at {cluster.scheduler_address} with {len(cluster.scheduler_info['workers'])} worker(s)")

# %% [markdown]
# ## Compute

# %%
squares = client.map(lambda x: x * x, range(100))
print("sum of squares:", client.submit(sum, squares).result())

# %% [markdown]
# ## Adapt
# distributed's own adaptive policy asks for workers while tasks queue up; clusterctl starts them on
# `elastic.hosts` and, once the load is gone, retires them (their data moves first) and stops them.

# %%
cluster.adapt(minimum=1, maximum=4, interval="500ms")
sleeps = client.map(time.sleep, [0.5] * 100, pure=False)
peak = 0
while not all(future.done() for future in sleeps):
    peak = max(peak, len(cluster.scheduler_info["workers"]))
    time.sleep(0.2)
wait(sleeps)
print(f"100 half-second tasks ran on up to {peak} worker(s)")
del sleeps
while len(cluster.scheduler_info["workers"]) > 1:
    time.sleep(0.5)
print("back to", len(cluster.scheduler_info["workers"]), "worker(s)")

# %% [markdown]
# ## Detach, attach again, take it down
# `close()` detaches: the cluster keeps running (`clusterctl status` shows it), and any process can
# attach by name. For adapting with no Python session open: `clusterctl adapt --detach`.
# `down()` is `clusterctl down`: every process stopped and verified gone.

# %%
client.close()
cluster.close()
print("detached; clusters here:", ", ".join(c.name for c in clusterctl.list_clusters().clusters))

again = clusterctl.Cluster.from_name(cluster.name)
print("attached again:", again.scheduler_address == cluster.scheduler_address)
print("down:", len(again.down().stopped), "process(es) stopped and verified gone")
