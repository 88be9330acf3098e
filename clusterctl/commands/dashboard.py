"""`clusterctl dashboard`: the scheduler's dashboard on this machine, through SSH when it is private.

With `dashboard: local` the dashboard listens only on the scheduler host's loopback; this opens a
tunnel to it over the SSH connection clusterctl already uses, and yields the local URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clusterctl import scheduler_api, state
from clusterctl.errors import ClusterctlError
from clusterctl.group import connect


@dataclass(frozen=True)
class Dashboard:
    url: str
    tunnel: bool  # True: the URL works only while this command runs (an SSH tunnel)


@contextmanager
def dashboard(cluster: str | None = None, config: str | None = None) -> Iterator[Dashboard]:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    inventory = st.inventory
    view = scheduler_api.query(st.scheduler_address, tls=st.client_tls())
    if view.dashboard_port is None or inventory.scheduler.dashboard_address is None:
        raise ClusterctlError(f"cluster {name!r} has no dashboard",
                              "set scheduler.dashboard_address (e.g. ':8787') and run `clusterctl up --restart`")
    scheduler_host = inventory.scheduler.host
    target = "127.0.0.1" if inventory.scheduler.dashboard == "local" else st.scheduler_host
    with connect(inventory, [scheduler_host]) as hosts:
        # A local host's dashboard is on this machine already; an SSH host's comes through a tunnel.
        port = hosts[scheduler_host].transport.open_tunnel(target, view.dashboard_port)
        tunnel = inventory.host(scheduler_host).connection != "local"
        yield Dashboard(f"http://127.0.0.1:{port}/status", tunnel)
