from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import kill_recorded

pytest_plugins = ["tests.helpers.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C is Ctrl-C in every process the tests start, however the suite was launched: a shell's
    background job (`make test &`, nohup) starts with SIGINT ignored, which every child would inherit
    across exec, and the tests of interrupts would see clusterctl ignore them."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
