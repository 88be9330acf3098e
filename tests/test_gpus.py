"""GPU detection as the preflight does it: the host's agent runs `nvidia-smi` (here a fake one) with a
worker group's env and setup, in the same round trip as the versions, and a host without one is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterctl.errors import HostError
from clusterctl.group import HostGroup
from clusterctl.host import Host
from clusterctl.inventory import HostSettings
from clusterctl.preflight import preflight
from clusterctl.records import Gpu
from clusterctl.transport.local import LocalTransport

QUERY = "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits"


def fake_nvidia_smi(directory: Path, output: str, status: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$*" = "{QUERY}" ] || exit 2\nprintf "%s" "{output}"\nexit {status}\n')
    script.chmod(0o755)
    return directory


def host(tmp_path: Path) -> Host:
    settings = HostSettings(connection="local", python=sys.executable, run_dir=str(tmp_path / "run"))
    return Host("me", settings, "t", LocalTransport("me"))


def test_the_gpus_come_with_the_versions_with_the_groups_path(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "0, GPU-aa, Tesla T4, 15360\n1, GPU-bb, Tesla T4, [N/A]\n")
    versions, gpus = host(tmp_path).versions_and_gpus([], {"env": {"PATH": f"{bin_dir}:/usr/bin:/bin"}, "setup": []})
    assert versions["distributed"]
    assert gpus == [Gpu(0, "GPU-aa", "Tesla T4", 15360), Gpu(1, "GPU-bb", "Tesla T4", None)]


def test_setup_lines_apply_too(tmp_path: Path) -> None:
    bin_dir = fake_nvidia_smi(tmp_path / "bin", "0, GPU-aa, A100, 40960\n")
    probe = {"env": {"PATH": "/usr/bin:/bin"}, "setup": [f"export PATH={bin_dir}:$PATH"]}
    assert host(tmp_path).versions_and_gpus([], probe)[1] == [Gpu(0, "GPU-aa", "A100", 40960)]


@pytest.mark.parametrize(("output", "status", "why"), [
    (None, 0, "nvidia-smi: command not found"),
    ("", 0, "nvidia-smi lists no GPU"),
    ("NVIDIA-SMI has failed", 9, "nvidia-smi failed (exit 9): NVIDIA-SMI has failed"),
    ("garbage\n", 0, "nvidia-smi printed an unexpected line: 'garbage'"),
])
def test_a_host_without_a_usable_nvidia_smi_is_refused_naming_it(tmp_path: Path, output: str | None, status: int,
                                                                   why: str) -> None:
    path = "/usr/bin:/bin"
    if output is not None:
        path = f"{fake_nvidia_smi(tmp_path / 'bin', output, status)}:{path}"
    me = host(tmp_path)
    with pytest.raises(HostError) as refused:
        preflight(HostGroup({"me": me}), "me", gpu_probes={"me": {"env": {"PATH": path}, "setup": []}})
    assert refused.value.host == "me" and refused.value.exit_code == 1
    assert refused.value.message == f"me: its worker group has `gpus:` but {why}"
    assert "nvidia-smi on the group's PATH" in (refused.value.hint or "")


def test_without_gpu_groups_nothing_is_asked(tmp_path: Path) -> None:
    report = preflight(HostGroup({"me": host(tmp_path)}), "me")
    assert report.gpus == {}
