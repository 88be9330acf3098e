"""Typed process records, from the start request to the agent's answer to the state file.

A process is one ``ProcessRecord`` from the moment its host answers a start request until
`down` verifies it gone: the agent's answers are checked and turned into these types here, in
one place, and nothing above reads an answer by key. Anything of the wrong shape raises
``AnswerError``, which ``Host`` turns into a ``HostError`` for that host alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from clusterctl.inventory import is_valid_address


@dataclass(frozen=True)
class StoppedProcess:
    """A process `down` or `remove-worker` stopped and verified gone."""

    host: str
    name: str
    pid: int

    def __str__(self) -> str:
        return f"{self.host}: {self.name} (pid {self.pid})"


class AnswerError(ValueError):
    """An agent answer (or a pid file it read) does not have the shape clusterctl expects."""


def field_of(document: Any, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    """``document[key]``, checked to be of ``kind`` (None allowed when ``optional``)."""
    if not isinstance(document, dict):
        raise AnswerError(f"expected an object, got {type(document).__name__}")
    value = document.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise AnswerError(f"{key!r} is a boolean")
    if not isinstance(value, kind):
        raise AnswerError(f"{key!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def pid_of(document: Any) -> int:
    """``document["pid"]``: an int above 1 (0 and negatives name process groups, 1 is init)."""
    pid: int = field_of(document, "pid", int)
    if pid <= 1:
        raise AnswerError(f"'pid' {pid} is not a process of ours")
    return pid


def list_of(document: Any, key: str) -> list[Any]:
    return list(field_of(document, key, list))


def addresses_of(document: Any, key: str) -> list[str]:
    """``document[key]``: a list of host names or addresses, nothing a shell or ssh could read as an option."""
    addresses = _names(document, key)
    for address in addresses:
        if not is_valid_address(address):
            raise AnswerError(f"{key!r} holds {address[:40]!r}, not a host address")
    return addresses


def _names(document: Any, key: str) -> list[str]:
    names = field_of(document, key, list, optional=True) or []
    if not all(isinstance(name, str) for name in names):
        raise AnswerError(f"{key!r} holds a non-string")
    return names


def _env(document: Any) -> dict[str, str] | None:
    env = field_of(document, "env", dict, optional=True)
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise AnswerError("'env' holds a non-string")
    return env


@dataclass(frozen=True)
class Gpu:
    """One GPU of a host, as its ``nvidia-smi`` lists it."""

    index: int
    uuid: str
    name: str
    memory_mib: int | None

    @classmethod
    def from_answer(cls, document: Any) -> Gpu:
        index = field_of(document, "index", int)
        if not 0 <= index < 1024:
            raise AnswerError(f"GPU index {index} is out of range")
        return cls(index=index, uuid=field_of(document, "uuid", str), name=field_of(document, "name", str),
                   memory_mib=field_of(document, "memory_mib", int, optional=True))


def gpus_of(document: Any) -> list[Gpu] | str | None:
    """A ``versions`` answer's ``gpus`` (the GPUs found) or ``gpu_error`` (why none could be asked); None
    when the request asked for none."""
    if not isinstance(document, dict):
        raise AnswerError(f"expected an object, got {type(document).__name__}")
    if document.get("gpu_error") is not None:
        return str(field_of(document, "gpu_error", str))
    if document.get("gpus") is None:
        return None
    return [Gpu.from_answer(item) for item in list_of(document, "gpus")]


def _gpu(document: Any) -> dict[str, Any] | None:
    gpu = field_of(document, "gpu", dict, optional=True)
    return None if gpu is None else asdict(Gpu.from_answer(gpu))


@dataclass
class ProcessRecord:
    """A process clusterctl started: where, which pid (and its start time, against pid reuse), its log."""

    role: str  # "scheduler" or "worker"
    name: str
    host: str
    pid: int
    start_time: int | None
    log: str
    worker_names: list[str] = field(default_factory=list)
    added: bool = False  # started by `add-worker`, not described by the inventory
    spec: dict[str, Any] = field(default_factory=dict)  # an added group's settings, to start it again
    argv: list[str] = field(default_factory=list)  # what it runs: `up` restarts it when the plan differs
    env: dict[str, str] | None = None  # its own environment and setup lines (None: recorded before
    setup: list[str] | None = None  # clusterctl kept them); a change restarts it too
    elastic: bool = False  # added by `scale`/`adapt` from the inventory's `elastic:` section (also ``added``)
    group: str | None = None  # the inventory's worker group (None: recorded before groups were kept)
    gpu: dict[str, Any] | None = None  # a per-GPU worker's GPU: index, uuid, name, memory_mib

    @classmethod
    def from_json(cls, document: Any) -> ProcessRecord:
        """A record from the state file, checked like an agent answer."""
        return cls(
            role=field_of(document, "role", str), name=field_of(document, "name", str),
            host=field_of(document, "host", str), pid=pid_of(document),
            start_time=field_of(document, "start_time", int, optional=True), log=field_of(document, "log", str),
            worker_names=_names(document, "worker_names"), added=bool(document.get("added", False)),
            spec=field_of(document, "spec", dict, optional=True) or {}, argv=_names(document, "argv"),
            env=_env(document), setup=_names(document, "setup") if document.get("setup") is not None else None,
            elastic=bool(document.get("elastic", False)), group=field_of(document, "group", str, optional=True),
            gpu=_gpu(document),
        )

    def identity(self) -> dict[str, Any]:
        """What the agent needs to find this process again and to be sure it is the same one."""
        return {"name": self.name, "role": self.role, "pid": self.pid, "start_time": self.start_time, "log": self.log}


@dataclass
class SupervisorRecord:
    """A `clusterctl adapt` supervisor: a process on this machine that scales the cluster."""

    pid: int
    start_time: int | None
    log: str | None  # None when it runs in the foreground of a terminal
    minimum: int
    maximum: int | None
    interval: float

    @classmethod
    def from_json(cls, document: Any) -> SupervisorRecord:
        return cls(pid=field_of(document, "pid", int), start_time=field_of(document, "start_time", int, optional=True),
                   log=field_of(document, "log", str, optional=True), minimum=field_of(document, "minimum", int),
                   maximum=field_of(document, "maximum", int, optional=True),
                   interval=float(field_of(document, "interval", (int, float))))


@dataclass(frozen=True)
class StartFailure:
    """A process the host could not start (e.g. its python does not exist)."""

    name: str
    error: str


@dataclass(frozen=True)
class FoundProcess:
    """A process found on a host by its pid file (what runs there without local state)."""

    name: str
    role: str
    pid: int
    start_time: int | None
    log: str
    alive: bool
    worker_names: list[str] = field(default_factory=list)

    @classmethod
    def from_answer(cls, document: Any) -> FoundProcess:
        return cls(name=field_of(document, "name", str), role=field_of(document, "role", str, optional=True) or "worker",
                   pid=pid_of(document), start_time=field_of(document, "start_time", int, optional=True),
                   log=field_of(document, "log", str, optional=True) or "", alive=field_of(document, "alive", bool),
                   worker_names=_names(document, "worker_names"))

    def record(self, host: str) -> ProcessRecord:
        return ProcessRecord(role=self.role, name=self.name, host=host, pid=self.pid, start_time=self.start_time,
                             log=self.log, worker_names=list(self.worker_names))


@dataclass(frozen=True)
class StopOutcome:
    """One process after a stop request: verified ``gone`` or not, and whether this request signalled it."""

    name: str
    role: str
    pid: int
    gone: bool
    signalled: bool

    @classmethod
    def from_answer(cls, document: Any) -> StopOutcome:
        return cls(name=field_of(document, "name", str), role=field_of(document, "role", str, optional=True) or "worker",
                   pid=pid_of(document), gone=field_of(document, "gone", bool),
                   signalled=bool(field_of(document, "signalled", bool, optional=True)))


VERSION_KEYS = ("python", "executable", "dask", "distributed", "cloudpickle", "msgpack")


def versions_of(document: Any) -> dict[str, Any]:
    """A ``versions`` answer: every package's version text or None, ``errors`` module -> text, and the
    host's platform (``host``, a mapping the sync reads) as it came."""
    if not isinstance(document, dict):
        raise AnswerError(f"expected an object, got {type(document).__name__}")
    found: dict[str, Any] = {}
    for key, value in document.items():
        if key in ("gpus", "gpu_error"):
            continue  # read by gpus_of
        if key == "errors":
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise AnswerError("'errors' holds a non-string")
            found["errors"] = dict(value)
        elif key == "host":
            if value is not None and not isinstance(value, dict):
                raise AnswerError("'host' is not an object")
            found["host"] = value
        elif isinstance(key, str) and (value is None or isinstance(value, str)):
            found[key] = value
        else:
            raise AnswerError(f"{key!r} is not text")
    for key in VERSION_KEYS:
        found.setdefault(key, None)
    return found


def listening_of(document: Any, **fields: type) -> dict[str, Any]:
    """An answer about binding a port: ``listening`` (with ``fields``, name -> type, of what listened:
    a background listener's ``pid``/``start_time``, a served port's ``accepted``), or an ``error`` and
    whether the port is ``in_use``."""
    if field_of(document, "listening", bool):
        return {"listening": True, **{name: field_of(document, name, kind) for name, kind in fields.items()}}
    return {"listening": False, "error": field_of(document, "error", str),
            "in_use": bool(field_of(document, "in_use", bool, optional=True))}


def listener_of(document: Any) -> dict[str, Any]:
    """A ``listen`` answer: ``listening`` with the listener's ``pid`` and ``start_time``, or an ``error``."""
    answer = listening_of(document)
    if answer["listening"]:
        answer.update(pid=pid_of(document), start_time=field_of(document, "start_time", int, optional=True))
    return answer


def connected_of(document: Any) -> dict[str, Any]:
    """A ``connect`` answer: ``connected``, or not with an ``error``."""
    if field_of(document, "connected", bool):
        return {"connected": True}
    return {"connected": False, "error": field_of(document, "error", str)}
