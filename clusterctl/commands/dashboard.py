"""`clusterctl dashboard`: the scheduler's dashboard on this machine, through SSH when it is private.

With `dashboard: local` the dashboard listens only on the scheduler host's loopback; this opens a
tunnel to it over the SSH connection clusterctl already uses, and yields the local URL. The tunnel's
port on 127.0.0.1 is open to every user of this machine; with ``socket_path`` it is a Unix socket
that only this user can open (mode 0600) instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from clusterctl import scheduler_api, state
from clusterctl.errors import ClusterctlError
from clusterctl.group import connect


@dataclass(frozen=True)
class Dashboard:
    url: str
    tunnel: bool  # True: the URL works only while this command runs (an SSH tunnel, or the socket)


def _private_socket(path: str) -> socket.socket:
    """A Unix socket listening at ``path``, created with mode 0600: nobody else can connect."""
    if os.path.lexists(path):
        raise ClusterctlError(f"{path} already exists", "remove it, or pass another --socket path")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # bind creates the file: 0600 from its first moment
    try:
        server.bind(path)
        server.listen(16)
    except OSError as exc:
        server.close()
        raise ClusterctlError(f"cannot listen on {path}: {exc.strerror or exc}", "pass another --socket path") from None
    finally:
        os.umask(umask)
    return server


@contextmanager
def dashboard(cluster: str | None = None, config: str | None = None, socket_path: str | None = None
              ) -> Iterator[Dashboard]:
    """The dashboard's local URL (``unix:PATH`` with ``socket_path``), open until the context exits."""
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    inventory = st.inventory
    view = scheduler_api.query(st.scheduler_address, tls=st.client_tls(), expect=st.expected_scheduler_id())
    if view.dashboard_port is None or inventory.scheduler.dashboard_address is None:
        raise ClusterctlError(f"cluster {name!r} has no dashboard",
                              "set scheduler.dashboard_address (e.g. ':8787') and run `clusterctl up --restart`")
    scheduler_host = inventory.scheduler.host
    target = "127.0.0.1" if inventory.scheduler.dashboard == "local" else st.scheduler_host
    with connect(inventory, [scheduler_host]) as hosts:
        # A local host's dashboard is on this machine already; an SSH host's comes through a tunnel.
        if socket_path is None:
            port = hosts[scheduler_host].transport.open_tunnel(target, view.dashboard_port)
            yield Dashboard(f"http://127.0.0.1:{port}/status", inventory.host(scheduler_host).connection != "local")
            return
        listener = _private_socket(socket_path)
        try:
            hosts[scheduler_host].transport.open_tunnel(target, view.dashboard_port, listener)
            yield Dashboard(f"unix:{socket_path}", tunnel=True)
        finally:
            listener.close()
            with suppress(FileNotFoundError):
                os.unlink(socket_path)
