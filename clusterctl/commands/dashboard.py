"""`clusterctl dashboard`: the scheduler's dashboard on this machine, through SSH when it is private.

With `dashboard: local` the dashboard listens only on the scheduler host's loopback; this opens a
tunnel to it over the SSH connection clusterctl already uses, and yields the local URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from clusterctl import scheduler_api, state
from clusterctl.errors import ClusterctlError
from clusterctl.hosts import connect
from clusterctl.launch import address_host


@contextmanager
def dashboard(cluster: str | None = None, config: str | None = None) -> Iterator[str]:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    view = scheduler_api.query(st.scheduler_address, tls=st.client_tls())
    if view.dashboard_port is None or st.model().scheduler.dashboard_address is None:
        raise ClusterctlError(f"cluster {name!r} has no dashboard",
                              "set scheduler.dashboard_address (e.g. ':8787') and run `clusterctl up --restart`")
    inventory = st.model()
    scheduler_host = inventory.scheduler.host
    target = "127.0.0.1" if inventory.scheduler.dashboard == "local" else address_host(st.scheduler_address)
    with connect(inventory, [scheduler_host]) as hosts:
        # A local host's dashboard is on this machine already; an SSH host's comes through a tunnel.
        port = hosts[scheduler_host].transport.open_tunnel(target, view.dashboard_port)
        yield f"http://127.0.0.1:{port}/status"
