from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import kill_recorded

pytest_plugins = ["tests.helpers.fixtures"]


@pytest.fixture(autouse=True)
def clusterctl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own CLUSTERCTL_HOME; whatever its clusters recorded is killed by pid after."""
    home = tmp_path / "clusterctl-home"
    monkeypatch.setenv("CLUSTERCTL_HOME", str(home))
    # HOME too: a local host's default run_dir is ~/.clusterctl/<cluster>, as on remote hosts.
    (tmp_path / "user-home").mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    yield home
    kill_recorded(home)
