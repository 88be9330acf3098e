"""GPUs beyond `up`: `check` finds and shows each host's GPUs as `up` would, and refuses a host
without; `add-worker --gpus` starts one worker per GPU exactly as a worker group with `gpus:` does,
and refuses before starting anything on a host without one. A fake `nvidia-smi` on this machine,
put on the PATH the host's `env:` gives, lists the GPUs of a file the test writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distributed import Client

from tests.helpers.cluster import clusterctl, local_inventory, recorded_processes, write_inventory

QUERY = "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits"


def fake_nvidia_smi(base: Path, names: list[str]) -> tuple[Path, Path]:
    """A directory holding the fake nvidia-smi, and the file of GPUs it lists (remove it: no GPU)."""
    (base / "bin").mkdir(parents=True)
    listing = base / "gpus.csv"
    listing.write_text("".join(f"{i}, GPU-{i:04d}, {name}, 16384\n" for i, name in enumerate(names)))
    script = base / "bin" / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$*" = "{QUERY}" ] || exit 2\n[ -f "{listing}" ] && exec cat "{listing}"\nexit 0\n')
    script.chmod(0o755)
    return base / "bin", listing


def with_path(inventory: dict[str, Any], directory: Path | None) -> dict[str, Any]:
    """The host `me` with ``directory`` first on its PATH (None: a PATH without any nvidia-smi)."""
    path = ":".join([*([str(directory)] if directory else []), "/usr/bin", "/bin"])
    inventory["hosts"]["me"]["env"] = {"PATH": path}
    return inventory


def test_check_shows_the_gpus_up_would_use_and_fails_a_host_without(tmp_path: Path) -> None:
    fake, _ = fake_nvidia_smi(tmp_path / "nvidia", ["Tesla T4", "A100"])
    workers = [{"name": "gpu", "host": "me", "gpus": "auto"}]
    config = write_inventory(tmp_path / "c.yaml", with_path(local_inventory("gpucheck", workers=workers), fake))
    shown = clusterctl("check", str(config))
    assert shown.exit_code == 0, shown.stdout + shown.stderr
    assert "GPUs" in shown.stdout and "me: GPU 0: Tesla T4, 16384 MiB; GPU 1: A100, 16384 MiB" in shown.stdout
    document = clusterctl("check", str(config), "--json").json()
    (me,) = document["hosts"]
    assert me["checks"]["gpus"] == {"status": "ok", "reason": None, "hint": None}
    assert me["gpus"] == [{"index": 0, "uuid": "GPU-0000", "name": "Tesla T4", "memory_mib": 16384},
                          {"index": 1, "uuid": "GPU-0001", "name": "A100", "memory_mib": 16384}]

    none = write_inventory(tmp_path / "none.yaml", with_path(local_inventory("gpucheck", workers=workers), None))
    refused = clusterctl("check", str(none))
    assert refused.exit_code == 1, refused.stdout
    assert "✗ me: GPUs: its worker group has `gpus:` but nvidia-smi: command not found" in refused.stdout
    assert "put nvidia-smi on the group's PATH" in refused.stdout
    assert clusterctl("check", str(none), "--json").json()["hosts"][0]["gpus"] is None

    three = write_inventory(tmp_path / "three.yaml", with_path(local_inventory(
        "gpucheck", workers=[{"name": "gpu", "host": "me", "gpus": 3}]), fake))
    document = clusterctl("check", str(three), "--json").json()
    assert not document["ok"]
    assert document["hosts"][0]["checks"]["gpus"]["reason"] == "worker group gpu: gpus: 3, but nvidia-smi lists 2 GPU(s)"

    plain = write_inventory(tmp_path / "plain.yaml", with_path(local_inventory(
        "gpucheck", workers=[{"name": "cpu", "host": "me"}]), None))
    document = clusterctl("check", str(plain), "--json").json()
    assert document["ok"] and "gpus" not in document["hosts"][0]["checks"], "no GPU group: nothing asked"
    assert "GPUs" not in clusterctl("check", str(plain)).stdout


def cuda_devices(address: str) -> dict[str, str]:
    """Worker name -> the CUDA_VISIBLE_DEVICES its process sees."""
    with Client(address, timeout=10) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        names = {address: worker["name"] for address, worker in client.scheduler_info()["workers"].items()}
    return {names[address]: devices for address, devices in seen.items()}


def test_add_worker_gpus_starts_one_worker_per_gpu_as_a_gpu_group_would(tmp_path: Path) -> None:
    fake, listing = fake_nvidia_smi(tmp_path / "nvidia", ["Tesla T4", "Tesla T4", "A100"])
    inventory = with_path(local_inventory("gpuadd", workers=[{"name": "cpu", "host": "me"}]), fake)
    inventory["hosts"]["me"]["env"].update({"OMP_NUM_THREADS": "1"})
    config = write_inventory(tmp_path / "c.yaml", inventory)
    assert clusterctl("up", str(config)).exit_code == 0
    address = f"tcp://127.0.0.1:{inventory['scheduler']['port']}"

    added = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "auto", "--name", "g")
    assert added.exit_code == 0, added.stderr
    added = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "0,2")  # a generated name
    assert added.exit_code == 0, added.stderr
    assert cuda_devices(address) == {"cpu": "", "g-gpu0": "0,1,2", "g-gpu1": "1,2,0", "g-gpu2": "2,0,1",
                                     "me-add1-gpu0": "0,2", "me-add1-gpu2": "2,0"}
    workers = clusterctl("status", "--cluster", "gpuadd", "--json").json()["workers"]
    gpu_workers = {w["name"]: w for w in workers if w["name"] != "cpu"}
    assert {name: (w["resources"], w["gpu"]["index"], w["gpu"]["name"]) for name, w in gpu_workers.items()} == {
        "g-gpu0": ({"GPU": 1}, 0, "Tesla T4"), "g-gpu1": ({"GPU": 1}, 1, "Tesla T4"), "g-gpu2": ({"GPU": 1}, 2, "A100"),
        "me-add1-gpu0": ({"GPU": 1}, 0, "Tesla T4"), "me-add1-gpu2": ({"GPU": 1}, 2, "A100")}

    # `up` again plans each added process from what it recorded: the same, so all keep running.
    pids = {p["name"]: p["pid"] for p in recorded_processes(Path(os.environ["CLUSTERCTL_HOME"]))}
    again = clusterctl("up", str(config))
    assert again.exit_code == 0, again.stderr
    assert {p["name"]: p["pid"] for p in recorded_processes(Path(os.environ["CLUSTERCTL_HOME"]))} == pids
    assert cuda_devices(address)["g-gpu1"] == "1,2,0"

    restarted = clusterctl("up", str(config), "--restart")  # started again as they were, GPU and all
    assert restarted.exit_code == 0, restarted.stderr
    renewed = {p["name"]: p["pid"] for p in recorded_processes(Path(os.environ["CLUSTERCTL_HOME"]))}
    assert renewed.keys() == pids.keys() and renewed["me-add1-gpu2"] != pids["me-add1-gpu2"]
    pids = renewed
    assert cuda_devices(address)["me-add1-gpu2"] == "2,0"
    workers = clusterctl("status", "--cluster", "gpuadd", "--json").json()["workers"]
    assert {w["name"]: w["gpu"]["index"] for w in workers if w["gpu"]} == {
        "g-gpu0": 0, "g-gpu1": 1, "g-gpu2": 2, "me-add1-gpu0": 0, "me-add1-gpu2": 2}

    refused = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "1,", "--name", "g")  # g-gpu1: taken
    assert refused.exit_code == 2 and "worker name 'g-gpu1' is already used" in refused.stderr, refused.stderr
    refused = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "auto", "--nworkers", "2")
    assert refused.exit_code == 2 and "--nworkers: with --gpus each GPU gets one worker process" in refused.stderr
    refused = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "all")
    assert refused.exit_code == 2 and "--gpus: expected auto, a count like 2, or indices like 0,2" in refused.stderr
    refused = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "4", "--name", "h")
    assert refused.exit_code == 1 and "me: gpus: 4, but nvidia-smi lists 3 GPU(s)" in refused.stderr, refused.stderr
    listing.unlink()  # now the host has no GPU
    refused = clusterctl("add-worker", "--cluster", "gpuadd", "--gpus", "auto", "--name", "h")
    assert refused.exit_code == 1, refused.stderr
    assert "error: me: --gpus asks for its GPUs but nvidia-smi lists no GPU" in refused.stderr
    assert "or choose another host" in refused.stderr
    assert "starting" not in refused.stderr
    assert {p["name"]: p["pid"] for p in recorded_processes(Path(os.environ["CLUSTERCTL_HOME"]))} == pids
    assert set(cuda_devices(address)) == set(pids) - {"scheduler"}
    assert clusterctl("down", "--cluster", "gpuadd").exit_code == 0
