"""clusterctl: a YAML inventory of machines -> a running Dask cluster over SSH.

From Python: ``clusterctl.Cluster`` (a ``distributed.deploy.Cluster``) and ``clusterctl.list_clusters()``.
Both are imported on first use, so ``import clusterctl`` (and the command line) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Cluster", "__version__", "list_clusters"]

if TYPE_CHECKING:
    from clusterctl.api import Cluster
    from clusterctl.commands.list_clusters import list_clusters


def __getattr__(name: str) -> Any:
    if name == "Cluster":
        from clusterctl.api import Cluster

        return Cluster
    if name == "list_clusters":
        from clusterctl.commands.list_clusters import list_clusters

        return list_clusters
    raise AttributeError(f"module 'clusterctl' has no attribute {name!r}")
