"""`clusterctl env`: shell exports so a plain `Client()` finds the cluster (and its TLS files)."""

from __future__ import annotations

from clusterctl import state, tls
from clusterctl.errors import ClusterctlError


def env(cluster: str | None = None, config: str | None = None) -> dict[str, str]:
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    exports = {"DASK_SCHEDULER_ADDRESS": st.scheduler_address}
    files = st.client_tls()
    if files is not None:
        exports.update(tls.client_environment(files))
    return exports
