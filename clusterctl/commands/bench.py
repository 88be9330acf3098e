"""`clusterctl bench`: per-task overhead, throughput and bandwidth of the running cluster, beside a
LocalCluster in this process measured the same way (the lecture's "about 1 ms per task")."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from clusterctl import measure, scheduler_api, state
from clusterctl.errors import ClusterctlError, InvalidInputError
from clusterctl.measure import BenchSettings, Figures
from clusterctl.progress import Progress
from clusterctl.report import JSON_SCHEMA_VERSION

BASELINE_WORKERS = 2


@dataclass
class BenchResult:
    cluster: str
    scheduler_address: str
    settings: BenchSettings
    figures: Figures
    baseline: Figures | None

    def document(self) -> dict[str, Any]:
        def figures(found: Figures | None) -> dict[str, Any] | None:
            if found is None:
                return None
            values = asdict(found)
            values.pop("keys")
            return values

        return {"schema": JSON_SCHEMA_VERSION, "cluster": self.cluster, "scheduler_address": self.scheduler_address,
                "settings": asdict(self.settings), "cluster_figures": figures(self.figures),
                "baseline": figures(self.baseline)}


def bench(progress: Progress, cluster: str | None = None, config: str | None = None, tasks: int = 1000,
          repeats: int = 3, transfer_mb: int = 64, baseline: bool = True) -> BenchResult:
    if tasks < 10 or repeats < 1 or transfer_mb < 1:
        raise InvalidInputError("--tasks must be at least 10, --repeats and --transfer-mb at least 1")
    name = state.resolve_name(cluster, config)
    st = state.load(name)
    if st is None:
        raise ClusterctlError(f"cluster {name!r} is not running", "start it with `clusterctl up CONFIG`")
    settings = BenchSettings(tasks=tasks, repeats=repeats, transfer_mb=transfer_mb)
    # Measure our own scheduler only: another cluster's at this address is refused by its id.
    scheduler_api.query(st.scheduler_address, tls=st.client_tls(), expect=st.expected_scheduler_id())
    try:
        figures = measure.on_cluster(st.scheduler_address, st.client_tls(), settings, progress.step)
        local = measure.on_local_cluster(BASELINE_WORKERS, settings, progress.step) if baseline else None
    finally:
        progress.done()
    return BenchResult(name, st.scheduler_address, settings, figures, local)
