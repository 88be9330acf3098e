"""What runs where: one directory per cluster under $CLUSTERCTL_HOME, written atomically.

    $CLUSTERCTL_HOME/
      current                    name of the cluster `up` touched last
      locks/<name>.lock          held while a command changes the cluster
      clusters/<name>/state.json inventory, addresses, every process (role, host, name, pid, log)

Logs and pid files live in each host's run_dir (default ``~/.clusterctl/<name>`` on that host,
local hosts too), so that losing this directory never loses what `down CONFIG` finds them by.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clusterctl import paths
from clusterctl.errors import ClusterctlError, InvalidInputError, LockedError
from clusterctl.inventory import NAME_PATTERN, Inventory, load_inventory
from clusterctl.records import AnswerError, ProcessRecord, SupervisorRecord
from clusterctl.tls import TlsFiles, local_files

STATE_VERSION = 1
LOCK_WAIT_SECONDS = 3.0


@dataclass
class ClusterState:
    name: str
    inventory: Inventory  # validated once, when the state is made or loaded
    config_path: str | None
    scheduler_address: str
    dashboard_url: str | None
    processes: list[ProcessRecord] = field(default_factory=list)
    versions: dict[str, Any] = field(default_factory=dict)  # the scheduler host's, for add-worker's preflight
    tls: bool = False  # the cluster speaks TLS; the client's files are in <cluster dir>/tls
    scheduler_host: str = ""  # where the scheduler listens (the host part of its address)
    scheduler_id: str = ""  # the identity our scheduler answers with (launch.new_scheduler_id)
    version: int = STATE_VERSION
    supervisor: SupervisorRecord | None = None  # a `clusterctl adapt` process that scales this cluster

    def __post_init__(self) -> None:
        if isinstance(self.inventory, dict):  # as written in state.json
            self.inventory = Inventory.model_validate(self.inventory)
        if not self.scheduler_host:  # state written before the field existed
            self.scheduler_host = self.scheduler_address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")

    def expected_workers(self) -> dict[str, str]:
        """Worker name -> host, for every recorded worker process."""
        return {worker: p.host for p in self.processes if p.role == "worker" for worker in p.worker_names}

    def client_tls(self) -> TlsFiles | None:
        """The client's TLS files (in the cluster's state directory), or None without TLS."""
        return local_files(tls_dir(self.name), "client") if self.tls else None

    def expected_scheduler_id(self) -> str:
        """What the scheduler at our address must answer with before it is trusted, retired or closed."""
        return self.scheduler_id or f"clusterctl:{self.name}:"

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["inventory"] = self.inventory.model_dump(mode="json")
        return document


def cluster_dir(name: str) -> Path:
    if not NAME_PATTERN.fullmatch(name):  # a name from a file must never lead outside the home
        raise InvalidInputError(f"{name!r} is not a valid cluster name")
    return paths.home() / "clusters" / name


def tls_dir(name: str) -> Path:
    return cluster_dir(name) / "tls"


def save(state: ClusterState) -> None:
    directory = cluster_dir(state.name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # the agent may have made it first, as the parent of the local run dir
    _write_atomically(directory / "state.json", json.dumps(state.to_json(), indent=2, sort_keys=True))


def load(name: str) -> ClusterState | None:
    """The cluster's state, checked like an inventory: a damaged file is one clear error."""
    path = cluster_dir(name) / "state.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise ClusterctlError(f"cannot read {path}: {exc}", f"remove {path} if the cluster is gone") from None
    hint = f"if the cluster is gone, remove {path.parent}; else run `clusterctl down CONFIG`"
    try:
        if not isinstance(raw, dict) or raw.get("name") != name:
            raise AnswerError(f"it does not describe cluster {name!r}")
        raw["processes"] = [ProcessRecord.from_json(p) for p in raw.get("processes") or []]
        if raw.get("supervisor") is not None:
            raw["supervisor"] = SupervisorRecord.from_json(raw["supervisor"])
        return ClusterState(**raw)
    except (AnswerError, AttributeError, TypeError, KeyError) as exc:
        raise ClusterctlError(f"{path} is not a clusterctl state file ({exc})", hint) from None
    except ValidationError as exc:
        raise ClusterctlError(f"{path} holds an invalid inventory ({exc.error_count()} error(s), first: "
                              f"{exc.errors()[0]['msg']})", hint) from None


def remove(name: str) -> None:
    directory = cluster_dir(name)
    if directory.is_symlink():  # never follow it out of $CLUSTERCTL_HOME: only the link goes
        directory.unlink()
    elif directory.resolve().parent == (paths.home() / "clusters").resolve():
        # The state first: whoever still finds it (`logs -f`) may rely on the logs beside it being there.
        (directory / "state.json").unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
    if current() == name:
        (paths.home() / "current").unlink(missing_ok=True)


def set_current(name: str) -> None:
    _write_atomically(paths.home() / "current", name + "\n")


def current() -> str | None:
    try:
        name = (paths.home() / "current").read_text().strip()
    except FileNotFoundError:
        return None
    return name if NAME_PATTERN.fullmatch(name) else None


def known_clusters() -> list[str]:
    root = paths.home() / "clusters"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.exists() else []


def resolve_name(cluster: str | None, config: str | None) -> str:
    """The cluster a command is about: --cluster, else the config's name, else the current one."""
    if cluster:
        if not NAME_PATTERN.fullmatch(cluster):
            raise InvalidInputError(f"--cluster {cluster!r} is not a valid cluster name")
        return cluster
    if config:
        return load_inventory(config).name
    name = current()
    if name is None:
        known = known_clusters()
        hint = f"pass --cluster NAME (known: {', '.join(known)})" if known else "start one with `clusterctl up CONFIG`"
        raise ClusterctlError("no current cluster", hint)
    return name


@contextlib.contextmanager
def locked(name: str, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold the cluster's lock; wait briefly for another command, then refuse."""
    directory = paths.home() / "locks"
    directory.mkdir(mode=0o700, exist_ok=True)
    with open(directory / f"{name}.lock", "a+") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(f"cluster {name!r} is busy: another clusterctl command is changing it",
                                      "wait for it to finish, then run this again") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
