"""`clusterctl sync CONFIG`: build the environment here and install it on every host, starting nothing.

The same step `up` runs first when the inventory says `environment: {sync: true}` (see
``clusterctl.environment``); `--clean` removes each host's venv and shipped wheels instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterctl import environment, state
from clusterctl.environment import SyncReport
from clusterctl.group import connect
from clusterctl.inventory import load_inventory
from clusterctl.progress import PasswordPrompt, Progress
from clusterctl.report import JSON_SCHEMA_VERSION


@dataclass
class CleanReport:
    cluster: str
    removed: dict[str, list[str]] = field(default_factory=dict)  # host -> paths removed there

    def document(self) -> dict[str, Any]:
        return {"schema": JSON_SCHEMA_VERSION, "cluster": self.cluster, "removed": self.removed}


def sync(config: str, progress: Progress, password_prompt: PasswordPrompt | None = None,
         clean: bool = False) -> SyncReport | CleanReport:
    """Every host of ``config`` (its scheduler and worker hosts) gets the environment, or loses it with ``clean``."""
    inventory = load_inventory(config)
    aliases = list(dict.fromkeys([inventory.scheduler.host, *(group.host for group in inventory.workers)]))
    try:
        with state.locked(inventory.name), connect(inventory, aliases, password_prompt) as hosts:
            if clean:
                progress.step(f"removing the venv on {len(hosts)} host(s)")
                return CleanReport(inventory.name, environment.clean_hosts(hosts))
            return environment.sync_hosts(inventory.name, inventory.environment, Path(config).resolve().parent,
                                          hosts, progress)
    finally:
        progress.done()
