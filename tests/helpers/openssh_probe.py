"""Run ssh-config cases against OpenSSH's own ``ssh -G`` and clusterctl's two resolvers.

``python -m tests.helpers.openssh_probe CASES.json RESULTS.json`` is meant to run inside a private
mount namespace where a scratch directory is bind-mounted over the passwd home's ``.ssh`` (so
``~/.ssh/config`` is the case's) and another over ``/etc/ssh`` (so ``/etc/ssh/ssh_config`` is the
case's): both ``ssh -G`` and clusterctl then read exactly the case's files and nothing of the
machine's. ``run_cases()`` starts it that way (creating an empty ``~/.ssh``, mode 0700, if there is
none to mount over, as ssh itself would); ``unavailable_reason()`` says why it cannot.

A case is a dict: ``files`` ({"~/.ssh/config": text, "/etc/ssh/ssh_config": text, ...}; files
under ``~`` must be in ``~/.ssh``), ``host``,
and optionally ``config`` (a file for CLUSTERCTL_SSH_CONFIG, i.e. ``ssh -F``) and ``inventory``
({address, user, port, identity_file}: what ``-o HostName``, ``-l``, ``-p``, ``-i`` give ssh).
Each result holds the ``key value`` lines (or an error) of ``ssh -G``, of the Python resolver, and
of ``clusterctl ssh-config`` (the path clusterctl chooses, here ``ssh -G``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SSH_ETC = Path("/etc/ssh")


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to bind-mount a scratch home and /etc/ssh in a private mount namespace)"
    for tool in ("ssh", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace: {probe.stderr.decode(errors='replace').strip()}"
    return None


def run_cases(cases: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Every case's results, computed in one private mount namespace."""
    dot_ssh, etc = workdir / "dot-ssh", workdir / "etc-ssh"
    dot_ssh.mkdir(mode=0o700)
    etc.mkdir(mode=0o755)
    (workdir / "cases.json").write_text(json.dumps(cases))
    passwd_home = pwd.getpwuid(os.getuid()).pw_dir
    Path(passwd_home, ".ssh").mkdir(mode=0o700, exist_ok=True)  # the mount point
    script = 'mount --bind "$1" "$2" && mount --bind "$3" /etc/ssh && shift 3 && exec "$@"'
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERCTL_", "SSH_"))}
    env.update(HOME=passwd_home, SHELL="/bin/sh", PYTHONPATH=str(REPO), CLUSTERCTL_HOME=str(workdir / "cctl"))
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(dot_ssh),
         f"{passwd_home}/.ssh", str(etc), sys.executable, "-m", "tests.helpers.openssh_probe",
         str(workdir / "cases.json"), str(workdir / "out.json")],
        env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed: {done.stderr[-3000:]}")
    results: list[dict[str, Any]] = json.loads((workdir / "out.json").read_text())
    return results


def _ssh_g(case: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    argv = ["ssh", "-G"]
    if case.get("config"):
        argv += ["-F", _place(case["config"])]
    inventory = case.get("inventory") or {}
    if "user" in inventory:
        argv += ["-l", inventory["user"]]
    if "port" in inventory:
        argv += ["-p", str(inventory["port"])]
    if "address" in inventory:
        argv += ["-o", f"HostName={inventory['address']}"]
    if "identity_file" in inventory:
        argv += ["-i", _place(inventory["identity_file"])]
    done = subprocess.run([*argv, "--", case["host"]], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return {"error": done.stderr.strip()}
    return {"lines": [line for line in done.stdout.splitlines() if line.split(" ", 1)[0] in keys]}


def _python(case: dict[str, Any]) -> dict[str, Any]:
    from clusterctl.errors import ClusterctlError
    from clusterctl.transport import ssh_config

    inventory = case.get("inventory") or {}
    try:
        options = ssh_config.resolve_with_python(
            case["host"], hostname=inventory.get("address"), user=inventory.get("user"), port=inventory.get("port"),
            identity_file=_place(inventory["identity_file"]) if "identity_file" in inventory else None)
    except ClusterctlError as exc:
        return {"error": exc.message}
    return {"lines": [f"{key} {value}" for key, value in options.lines]}


def _cli(case: dict[str, Any], scratch: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "clusterctl", "ssh-config", case["host"]]
    inventory = dict(case.get("inventory") or {})
    if inventory:
        if "identity_file" in inventory:
            inventory["identity_file"] = _place(inventory["identity_file"])
        path = scratch / "cluster.yaml"
        path.write_text(yaml.safe_dump({"name": "corpus", "hosts": {case["host"]: inventory},
                                        "scheduler": {"host": case["host"]},
                                        "workers": [{"name": "w", "host": case["host"]}]}))
        argv += ["--config", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return {"error": done.stderr.strip()}
    return {"lines": done.stdout.splitlines()}


def _place(path: str) -> str:
    if path.startswith("~"):
        assert path.startswith("~/.ssh/"), f"{path}: files under ~ must be in ~/.ssh (the scratch directory)"
        return str(Path.home()) + path[1:]
    return path


def _lay_out(files: dict[str, str]) -> None:
    """The case's files, and nothing else, under ~ and /etc/ssh (both scratch directories here)."""
    for root in (Path.home() / ".ssh", SSH_ETC):
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for name, text in files.items():
        path = Path(_place(name))
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)


def main(cases_path: str, out_path: str) -> None:
    from clusterctl.transport.ssh_config import KEYS

    cases = json.loads(Path(cases_path).read_text())
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            _lay_out(case.get("files", {}))
            os.environ.pop("CLUSTERCTL_SSH_CONFIG", None)
            if case.get("config"):
                os.environ["CLUSTERCTL_SSH_CONFIG"] = _place(case["config"])
            results.append({"id": case["id"], "ssh": _ssh_g(case, KEYS), "python": _python(case),
                            "cli": _cli(case, Path(scratch))})
    Path(out_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
