"""The inventory: cluster.yaml -> a validated model. The only module that knows the file format.

Every rejection is one ``InvalidInputError`` line naming the file, the line (where the YAML
parser knows it) and the key path, e.g. ``cluster.yaml:14: workers[1].nthreads: ...``.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
import sys
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from clusterctl.errors import InvalidInputError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME_PATTERN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
LOCAL_HOST = "localhost"  # the implicit host of `add-worker` without --host
DOTTED_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
INTERFACE_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,32}$")
CONFIG_KEY_PATTERN = re.compile(r"^[a-z0-9_-]+$")  # dask reads DASK_* names back in lower case
SHELL_CHARACTERS = set(" \t\n\r\0;&|$`<>()'\"\\*?[]{}!#")
MAX_GPUS = 64

def is_valid_address(value: str) -> bool:
    """A hostname or an IPv4/IPv6 address: nothing a shell or ssh could read as an option."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(HOSTNAME_PATTERN.fullmatch(value))


def _check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not valid: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not ENV_NAME_PATTERN.fullmatch(key):
            raise ValueError(f"environment variable name {key!r} is not valid: use letters, digits and '_'")
        if "\0" in value:
            raise ValueError(f"the value of {key} contains a NUL byte")
    return env


def check_plain_path(value: str, what: str) -> str:
    """A path or module name that a shell would read as it is written: no metacharacters, no option."""
    if not value or value.startswith("-") or any(c in SHELL_CHARACTERS for c in value) or not value.isprintable():
        raise ValueError(f"{what} {value!r} must be a path or module name without spaces or shell "
                         "characters, not starting with '-'")
    return value


def check_duration(value: Any) -> str | None:
    """A duration dask parses (``1h``, ``30s``, ``90``): kept as text, a bare number meaning seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value < float("inf"):
            raise ValueError(f"a duration must be above 0 seconds, got {value}")
        return f"{value}s"
    if not isinstance(value, str) or not value.isascii():
        raise ValueError(f"{value!r} is not a duration like 30s, 10m or 1h")
    from dask.utils import parse_timedelta  # lazy: dask is not needed to print --help

    try:
        seconds = parse_timedelta(value.strip(), default="seconds")
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{value!r} is not a duration like 30s, 10m or 1h") from None
    if seconds is None or not 0 < seconds < float("inf"):
        raise ValueError(f"a duration must be above 0 seconds, got {value!r}")
    return value.strip().replace(" ", "")


def check_port_range(value: Any) -> str | None:
    """A port (``40000``) or an inclusive range (``40000:40100``), as `dask worker` takes it."""
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str):
        parts = text.split(":")
        if len(parts) in (1, 2) and all(p.isascii() and p.isdigit() for p in parts):
            numbers = [int(p) for p in parts]
            if all(1 <= n <= 65535 for n in numbers) and numbers == sorted(numbers):
                return ":".join(str(n) for n in numbers)
    raise ValueError(f"{value!r} is not a port (1-65535) or a range like '40000:40100' (low:high)")


def flatten_dask_config(value: Any) -> dict[str, Any]:
    """``{distributed: {worker: {memory: {target: 0.7}}}}`` or dotted keys -> ``{"distributed.worker.memory.target": 0.7}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("dask_config must be a mapping of dask config keys, e.g. {distributed.worker.daemon: false}")
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not all(CONFIG_KEY_PATTERN.fullmatch(part) for part in key.split(".")):
            raise ValueError(f"dask_config key {key!r} is not a dask config key like distributed.worker.daemon "
                             "(lower-case words joined by dots)")
        if isinstance(item, dict) and item:
            flat.update({f"{key}.{inner}": v for inner, v in flatten_dask_config(item).items()})
        elif _is_literal(item):
            flat[key] = item
        else:
            raise ValueError(f"dask_config {key}: {item!r} is not a number, text, boolean, null or a list of them")
    return flat


def _is_literal(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_literal(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    if isinstance(value, str):
        return "\0" not in value
    return value is None or isinstance(value, (bool, int, float))


def dask_config_env(config: dict[str, Any]) -> dict[str, str]:
    """The ``DASK_*`` variables dask reads at import (``dask.config.collect_env``): a dotted key's parts
    joined by ``__``, the value as a Python literal, which dask reads back with ``ast.literal_eval``."""
    return {"DASK_" + "__".join(part.upper().replace("-", "_") for part in key.split(".")): repr(value)
            for key, value in config.items()}


def parse_resources(value: Any) -> dict[str, float]:
    """``{GPU: 2}`` or dask's string form ``"GPU=2 MEMORY=256e9"`` -> ``{"GPU": 2.0, ...}``."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for item in value.replace(",", " ").split():
            name, sep, amount = item.partition("=")
            if not sep:
                raise ValueError(f"resource {item!r} is not of the form NAME=AMOUNT (e.g. GPU=2)")
            pairs[name] = amount
        value = pairs
    if not isinstance(value, dict):
        raise ValueError("resources must be a mapping like {GPU: 2} or a string like \"GPU=2 MEMORY=256e9\"")
    resources: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            raise ValueError(f"resource name {name!r} is not an identifier (e.g. GPU, MEMORY)")
        if isinstance(amount, bool) or (isinstance(amount, str) and not amount.isascii()):
            raise ValueError(f"resource {name} amount must be a number, not {amount!r}")
        try:
            number = float(amount)
        except (TypeError, ValueError):
            raise ValueError(f"resource {name} amount {amount!r} is not a number") from None
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"resource {name} amount must be a finite number >= 0, got {amount!r}")
        resources[name] = number
    return resources


def format_resources(resources: dict[str, float]) -> str:
    """The ``--resources`` argument dask parses: ``GPU=2 MEMORY=256000000000``."""
    return " ".join(f"{name}={_format_number(amount)}" for name, amount in resources.items())


def _format_number(amount: float) -> str:
    return str(int(amount)) if amount.is_integer() else repr(amount)


def _check_memory_limit(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"memory_limit must be a size like 4GB, a fraction like 0.5, 'auto' or 0, not {value!r}")
    text = str(value).strip()
    if not text.isascii():
        raise ValueError(f"memory_limit {text!r} must be written in ASCII, like 4GB or 0.5")
    if text == "auto":
        return text
    try:
        number = float(text)
    except ValueError:
        from dask.utils import parse_bytes  # lazy: dask is not needed to print --help

        try:
            if parse_bytes(text) < 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ValueError(f"memory_limit {text!r} is not a size like 4GB, a fraction like 0.5, 'auto' or 0") from None
        return text
    if not number >= 0 or number == float("inf"):  # `not >=` also refuses NaN
        raise ValueError(f"memory_limit must be a finite number >= 0, got {text}")
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessSettings(_Model):
    """Settings that may be given at the defaults, host and worker-group levels (innermost wins)."""

    python: str | None = Field(None, description="Interpreter that has dask and distributed installed.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment for the processes, passed literally.")
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run before a process starts (e.g. conda activate)."
    )
    dask_config: dict[str, Any] = Field(
        default_factory=dict, description="Dask configuration every process here reads, e.g. "
        "{distributed.worker.memory.target: 0.7}; passed as DASK_* environment variables.")

    @field_validator("dask_config", mode="before")
    @classmethod
    def _dask_config(cls, value: Any) -> dict[str, Any]:
        return flatten_dask_config(value)

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value.startswith("-") or any(c in value for c in "\n\r\0")):
            raise ValueError("python must be an interpreter name or path, e.g. python3 or /opt/conda/bin/python")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in value.items()}
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_env(value)


class WorkerOptions(_Model):
    """`dask worker` options that may be given at the defaults, group, host and worker-group levels."""

    worker_class: str | None = Field(None, description="A distributed.Worker subclass importable on the host, "
                                     "e.g. mylab.GPUWorker.")
    preload: list[str] | None = Field(None, description="Modules or .py files each worker loads (--preload).")
    local_directory: str | None = Field(None, description="Directory for the workers' spilled data.")
    lifetime: str | None = Field(None, description="Shut each worker down after this long, e.g. 1h.")
    lifetime_stagger: str | None = Field(None, description="Random spread of lifetime, e.g. 5m.")
    lifetime_restart: bool | None = Field(None, description="Start a worker again when its lifetime ends.")
    death_timeout: str | None = Field(None, description="How long a worker waits for its scheduler, e.g. 60s.")
    worker_port: str | None = Field(None, description="A port or a range like 40000:40100 (for firewalls).")
    nanny_port: str | None = Field(None, description="A port or a range like 40100:40200.")
    interface: str | None = Field(None, description="Network interface to listen on, e.g. eth0 or ib0.")

    @field_validator("worker_class")
    @classmethod
    def _worker_class(cls, value: str | None) -> str | None:
        if value is not None and not DOTTED_NAME_PATTERN.fullmatch(value):
            raise ValueError(f"worker_class {value!r} must be a dotted Python name like mylab.GPUWorker")
        return value

    @field_validator("preload", mode="before")
    @classmethod
    def _preload(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("preload")
    @classmethod
    def _preload_items(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            check_plain_path(item, "preload")
        return value

    @field_validator("local_directory")
    @classmethod
    def _local_directory(cls, value: str | None) -> str | None:
        return None if value is None else check_plain_path(value, "local_directory")

    @field_validator("lifetime", "lifetime_stagger", "death_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> str | None:
        return check_duration(value)

    @field_validator("worker_port", "nanny_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> str | None:
        return check_port_range(value)

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str | None) -> str | None:
        if value is not None and not INTERFACE_PATTERN.fullmatch(value):
            raise ValueError(f"interface {value!r} is not a network interface name like eth0 or ib0")
        return value

    def worker_options(self) -> dict[str, Any]:
        """The options set here (not None)."""
        return {key: getattr(self, key) for key in WorkerOptions.model_fields if getattr(self, key) is not None}


class HostSettings(ProcessSettings, WorkerOptions):
    """How to reach a host. Every key may also be set under ``defaults`` and in a group."""

    connection: Literal["ssh", "local"] | None = Field(None, description="ssh (the default) or local.")
    address: str | None = Field(None, description="Hostname or IP to connect to, and that workers use.")
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535, strict=True)
    identity_file: str | None = None
    host_key_policy: Literal["accept-new", "strict"] | None = None
    run_dir: str | None = Field(None, description="Directory for pid files and logs on the host.")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_address(value):
            raise ValueError(f"address {value!r} is not a hostname or an IP address")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not USER_PATTERN.fullmatch(value):
            raise ValueError(f"user {value!r} is not a valid user name")
        return value

    @field_validator("identity_file", "run_dir")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "\n\r\0")):
            raise ValueError(f"{value!r} is not a usable path")
        return value


class SchedulerSpec(ProcessSettings):
    host: str = Field(description="Alias from `hosts`, or a bare address.")
    port: int = Field(8786, ge=1, le=65535, strict=True)
    dashboard_address: str | None = Field(":8787", description="Dashboard address like :8787; null turns it off.")
    dashboard: Literal["public", "local"] = Field(
        "public", description="local: bind the dashboard to the scheduler host's loopback; reach it with "
        "`clusterctl dashboard`, through SSH.")
    idle_timeout: str | None = Field(None, description="Shut the scheduler down after this long without "
                                     "clients or tasks, e.g. 1h.")
    preload: list[str] = Field(default_factory=list, description="Modules or .py files the scheduler loads.")

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _idle_timeout(cls, value: Any) -> str | None:
        return check_duration(value)

    @field_validator("preload", mode="before")
    @classmethod
    def _preload(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        for item in value if isinstance(value, list) else []:
            if isinstance(item, str):
                check_plain_path(item, "preload")
        return value

    def dashboard_bind(self) -> str | None:
        """The --dashboard-address to pass: loopback only when ``dashboard: local``."""
        if self.dashboard_address is None:
            return None
        if self.dashboard == "local":
            return f"127.0.0.1:{self.dashboard_address.rpartition(':')[2]}"
        return self.dashboard_address

    @field_validator("dashboard_address")
    @classmethod
    def _dashboard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        port_ok = port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if not sep or not port_ok or (host and not is_valid_address(host)):
            raise ValueError(f"dashboard_address {value!r} must look like ':8787' or '127.0.0.1:8787'")
        return value


class WorkerGroup(ProcessSettings, WorkerOptions):
    """One `dask worker` invocation: ``nworkers`` processes of ``nthreads`` threads each.

    In the file a group may name several hosts (``hosts:``); ``parse_inventory`` turns it into one
    entry per host, named ``<name>-<alias>``, whose ``group`` is the name written in the file.
    """

    name: str | None = Field(None, description="Group name; default <host>-g<index>. Worker names derive from it.")
    host: str
    group: str | None = Field(None, description="Set by clusterctl: the worker group this entry expands.")
    gpus: Literal["auto"] | list[int] | int | None = Field(
        None, description="One worker per GPU: auto (what nvidia-smi finds), a count (the first N) or indices.")
    nworkers: int = Field(1, ge=1, le=1024, strict=True, validation_alias=AliasChoices("nworkers", "nprocs"))
    nthreads: int = Field(1, ge=1, le=4096, strict=True)
    memory_limit: str | None = Field(None, description="Per worker process: 4GB, 0.5 (fraction), auto or 0.")
    resources: dict[str, float] = Field(default_factory=dict)
    dashboard: bool = Field(False, description="Start each worker's own dashboard (about 1 s of start-up each).")
    nanny: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value == "scheduler":
            raise ValueError("'scheduler' is the scheduler's own name: choose another worker group name")
        return None if value is None else _check_name(value, "worker group name")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, value: Any) -> str | None:
        return _check_memory_limit(value)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_GPUS:
                raise ValueError(f"gpus must be auto, a count from 1 to {MAX_GPUS}, or a list of indices; got {value}")
            return value
        if isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            if len(set(value)) != len(value) or not all(0 <= i < MAX_GPUS for i in value):
                raise ValueError(f"gpus indices must be distinct, from 0 to {MAX_GPUS - 1}; got {value}")
            return value
        raise ValueError(f"gpus must be auto, a count like 2, or a list of indices like [0, 2]; got {value!r}")

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> dict[str, float]:
        return parse_resources(value)

    def worker_names(self) -> list[str]:
        """The names the scheduler will report: dask appends -0, -1, ... when nworkers > 1."""
        assert self.name is not None, "names are assigned by Inventory"
        if self.nworkers == 1:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(self.nworkers)]


class ElasticWorkerSpec(WorkerGroup):
    """What `scale` and `adapt` start: any worker-group key but ``host``, which scaling chooses."""

    host: str = Field("", exclude=True, description="Not set here: scaling picks one of `elastic.hosts`.")
    name: str | None = Field("elastic", description="Prefix of added workers' names: <name>-<N>.")

    @model_validator(mode="before")
    @classmethod
    def _no_host(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("host" in data or "hosts" in data):
            raise ValueError("no `host` here: scaling picks one of `elastic.hosts`")
        if isinstance(data, dict) and data.get("gpus") is not None:
            raise ValueError("no `gpus` here: elastic workers are started without GPU detection; use `resources`")
        return data


class ElasticSpec(_Model):
    """What `scale` and `adapt` may add to the cluster, and where."""

    hosts: list[str] = Field(description="Aliases, groups, ranges or globs ('gpu*') of the hosts added workers "
                             "may use.")
    worker: ElasticWorkerSpec = Field(default_factory=ElasticWorkerSpec)
    minimum: int = Field(0, ge=0, strict=True, description="Workers (all of the cluster's) kept by up, scale, adapt.")
    maximum: int | None = Field(None, ge=0, strict=True, description="At most this many workers; default no limit.")


class TlsFilesSpec(_Model):
    """Your own CA, certificate and key (PEM), used by the scheduler, the workers and the client."""

    ca_file: str
    cert: str
    key: str

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip() or any(c in value for c in "\n\r\0"):
            raise ValueError(f"{value!r} is not a usable path")
        return value


class SecuritySpec(_Model):
    tls: Literal["auto", "off"] | TlsFilesSpec = Field(
        "off", description="auto: make a CA and certificates; or your own {ca_file, cert, key}.")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls(cls, value: Any) -> Any:
        return "off" if value in (None, False) else value

    @property
    def enabled(self) -> bool:
        return self.tls != "off"


PACKAGE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
RESERVED_PACKAGE_NAMES = {"python", "executable", "host", "errors"}  # keys of the agent's versions answer


class EnvironmentSpec(_Model):
    """The packages every host must have in the same version, and whether `up` installs them."""

    sync: bool = Field(False, description="Build a wheelhouse here and install it into a venv under each "
                       "host's run_dir before starting; every process then runs that venv's python.")
    requirements: str | None = Field(None, description="A requirements file (relative to the inventory); "
                                     "default: the versions installed here of dask, distributed, `packages` "
                                     "and everything they need.")
    packages: list[str] = Field(default_factory=list, description="More distributions to compare (and sync).")
    wheelhouse: str | None = Field(None, description="A directory of wheels to use; with it no package index "
                                   "is contacted.")

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for name in value:
            if not PACKAGE_NAME_PATTERN.fullmatch(name) or name.lower() in RESERVED_PACKAGE_NAMES:
                raise ValueError(f"{name!r} is not a distribution name (e.g. numpy, scikit-learn)")
        return value

    @field_validator("requirements", "wheelhouse")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c in value for c in "\n\r\0")):
            raise ValueError(f"{value!r} is not a usable path")
        return value


class GroupSpec(HostSettings):
    """A named set of hosts; its other keys are host settings its hosts share (group vars)."""

    hosts: list[str] = Field(description="Aliases, ranges (node[01:16]) or globs (gpu*) of its hosts.")

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def settings(self) -> HostSettings:
        """The group vars, as host settings (only what the group sets)."""
        return HostSettings.model_validate(self.model_dump(exclude={"hosts"}, exclude_unset=True))


class Inventory(_Model):
    name: str = Field(description="Cluster name; local state is keyed by it.")
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    environment: EnvironmentSpec = Field(default_factory=EnvironmentSpec)
    defaults: HostSettings = Field(default_factory=HostSettings)
    hosts: dict[str, HostSettings] = Field(default_factory=dict)
    groups: dict[str, GroupSpec] = Field(default_factory=dict, description="Named sets of hosts and the "
                                         "settings they share; innermost wins: defaults < groups < host.")
    scheduler: SchedulerSpec
    workers: list[WorkerGroup] = Field(default_factory=list)
    _where: dict[str, str] = PrivateAttr(default_factory=dict)  # host -> "file:line" that names it
    _origins: list[int] = PrivateAttr(default_factory=list)  # expanded worker entry -> its index in the file

    def _file_index(self, index: int) -> int:
        return self._origins[index] if index < len(self._origins) else index

    def where(self, alias: str) -> str | None:
        """The inventory line that defines ``alias`` (or first names a bare host), when read from a file."""
        return self._where.get(alias)

    elastic: ElasticSpec | None = Field(None, description="Where `scale` and `adapt` may add workers, and how many.")

    @field_validator("name")
    @classmethod
    def _cluster_name(cls, value: str) -> str:
        return _check_name(value, "cluster name")

    @field_validator("hosts")
    @classmethod
    def _aliases(cls, value: dict[str, HostSettings]) -> dict[str, HostSettings]:
        for alias in value:
            if not is_valid_address(alias):
                raise ValueError(f"host alias {alias!r} must be a hostname-like word (letters, digits, '-', '.')")
        return value

    @model_validator(mode="after")
    def _name_groups(self) -> Inventory:
        # Deterministic names, so the scheduler's view maps back to the inventory.
        for index, group in enumerate(self.workers):
            if group.name is None:
                host = re.sub(r"[^A-Za-z0-9_.-]", "_", group.host)  # an IPv6 address has colons
                object.__setattr__(group, "name", f"{host}-g{index}")
            if group.group is None:
                object.__setattr__(group, "group", group.name)
        return self

    def problems(self) -> list[tuple[list[Any], str]]:
        """Cross-field mistakes, as (key path, message): unknown hosts, duplicate worker names."""
        found: list[tuple[list[Any], str]] = []
        references: list[tuple[list[Any], str]] = [(["scheduler", "host"], self.scheduler.host)]
        references += [(["workers", i, "host"], group.host) for i, group in enumerate(self.workers)]
        for loc, host in references:
            if host not in self.hosts and host != LOCAL_HOST and not is_valid_address(host):
                known = ", ".join(sorted(self.hosts)) or "none"
                found.append((loc, f"{host!r} is neither an alias from `hosts` (known: {known}) nor an address"))
            elif host not in self.hosts and host != LOCAL_HOST:
                alias = _mistyped_alias(host, list(self.hosts))
                if alias is not None:
                    found.append((loc, f"{host!r} is not an alias from `hosts` (did you mean {alias!r}?); if it is "
                                       f"a machine's name, add it to `hosts` ({host}: {{}})"))
        for index, group in enumerate(self.workers):
            if not group.nanny and group.nworkers > 1:
                found.append((["workers", index, "nanny"], "nanny: false works only with nworkers: 1 "
                              "(dask worker refuses --no-nanny with several processes)"))
            if group.gpus is not None and group.nworkers != 1:
                found.append((["workers", index, "nworkers"], "with `gpus` each GPU gets one worker process: "
                              "leave nworkers out (use nthreads for threads per GPU worker)"))
        found += self._elastic_problems()
        seen: dict[str, int] = {}
        for index, group in enumerate(self.workers):
            if group.gpus is not None:
                per_gpu = re.compile(rf"{re.escape(group.name or '')}-gpu[0-9]+")
                for other, named in enumerate(self.workers):
                    if any(per_gpu.fullmatch(name) for name in [named.name or "", *named.worker_names()]):
                        found.append((["workers", other, "name"], f"names like {group.name}-gpu0 are the GPU "
                                      f"workers of workers[{index}]: rename one of the groups"))
            for worker in group.worker_names():
                if worker in seen:
                    found.append((["workers", index, "name"], f"worker name {worker!r} is already used by "
                                  f"workers[{self._file_index(seen[worker])}]; give the groups distinct `name`s"))
                seen.setdefault(worker, index)
        return found

    def _elastic_problems(self) -> list[tuple[list[Any], str]]:
        elastic = self.elastic
        if elastic is None:
            return []
        found: list[tuple[list[Any], str]] = []
        if not elastic.hosts:
            found.append((["elastic", "hosts"], "name at least one host (an alias or a glob like 'gpu*')"))
        for index, pattern in enumerate(elastic.hosts):
            try:
                matched = _pattern_hosts(self, pattern)
            except InvalidInputError as exc:  # an inverted or oversized range
                found.append((["elastic", "hosts", index], exc.message))
                continue
            if not matched:
                known = ", ".join(sorted(self.hosts)[:12]) + (", ..." if len(self.hosts) > 12 else "") or "none"
                found.append((["elastic", "hosts", index], f"{pattern!r} matches no host (known: {known})"))
        if elastic.maximum is not None and elastic.maximum < elastic.minimum:
            found.append((["elastic", "maximum"], f"maximum {elastic.maximum} is below minimum {elastic.minimum}"))
        if not elastic.worker.nanny and elastic.worker.nworkers > 1:
            found.append((["elastic", "worker", "nanny"], "nanny: false works only with nworkers: 1"))
        taken = re.compile(rf"{re.escape(elastic.worker.name or '')}-[0-9]+(-[0-9]+)?")
        for index, group in enumerate(self.workers):
            if any(taken.fullmatch(name) for name in [group.name or "", *group.worker_names()]):
                found.append((["workers", index, "name"], f"names like {elastic.worker.name}-1 are left to elastic "
                              "workers; rename the group or set `elastic.worker.name`"))
        return found

    def host(self, alias: str) -> HostSettings:
        """The host's settings with ``defaults`` filled in. A bare address is an SSH host."""
        own = self.hosts.get(alias)
        if own is None and alias == LOCAL_HOST:
            own = HostSettings(connection="local")
        merged = self.defaults
        for group in self.groups.values():  # in file order: a later group wins
            if alias in group.hosts:
                merged = _merge(merged, group.settings())
        merged = _merge(merged, own or HostSettings())
        if merged.connection is None:
            merged = merged.model_copy(update={"connection": "ssh"})
        return merged

    def process_settings(self, alias: str, own: ProcessSettings) -> ProcessSettings:
        """python/env/setup for a process on ``alias``: defaults < host < the process's own."""
        host = self.host(alias)
        return ProcessSettings(
            python=own.python or host.python or default_python(host),
            env={**host.env, **own.env},
            setup=[*host.setup, *own.setup],
            dask_config={**host.dask_config, **own.dask_config},
        )

    def worker_options(self, group: WorkerGroup) -> dict[str, Any]:
        """The `dask worker` options of ``group``: defaults < groups < host < the worker group."""
        return {**self.host(group.host).worker_options(), **group.worker_options()}

    def group_hosts(self, name: str) -> list[str] | None:
        """The aliases of the group ``name``, or None when there is no such group."""
        group = self.groups.get(name)
        return None if group is None else list(group.hosts)


def default_python(settings: HostSettings) -> str:
    """The interpreter of a host without `python:`: on this machine the one clusterctl runs under
    (it has distributed, whatever PATH says), elsewhere `python3`."""
    return sys.executable if settings.connection == "local" and sys.executable else "python3"


def _mistyped_alias(host: str, aliases: list[str]) -> str | None:
    """The alias ``host`` is a typo of (``nod1`` for ``node1``), or None. An IP address, a dotted
    name, or a sibling that differs only in its digits (``node3`` next to ``node1``) is no typo."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if "." in host:
        return None
    for alias in difflib.get_close_matches(host, aliases, n=3, cutoff=0.75):
        if re.sub(r"\d+", "#", alias) != re.sub(r"\d+", "#", host):
            return alias
    return None


def select_hosts(inventory: Inventory, patterns: list[str]) -> list[str]:
    """The hosts that ``patterns`` name, in order, without repeats: an alias of ``hosts``, a group of
    ``groups`` (its hosts), a range (``node[01:04]``), a glob over the aliases (``'gpu*'``, fnmatch),
    or a bare hostname/address. This is the one function that resolves a host pattern of a command.
    """
    selected: list[str] = []
    for pattern in patterns:
        selected += _pattern_hosts(inventory, pattern)
    return list(dict.fromkeys(selected))


def _pattern_hosts(inventory: Inventory, pattern: str) -> list[str]:
    if pattern in inventory.hosts or pattern == LOCAL_HOST:
        return [pattern]
    members = inventory.group_hosts(pattern)
    if members is not None:
        return members
    try:
        names = expand_range(pattern)
    except ValueError as exc:
        raise InvalidInputError(str(exc), "write a range as [low:high], e.g. node[01:16]") from None
    if names is not None:
        return [name for name in names if name in inventory.hosts or is_valid_address(name)]
    if any(c in pattern for c in "*?["):
        return [alias for alias in inventory.hosts if fnmatch.fnmatchcase(alias, pattern)]
    return [pattern] if is_valid_address(pattern) else []


RANGE_PATTERN = re.compile(r"\[([0-9]+):([0-9]+)\]")
MAX_RANGE = 4096  # hosts from one range: a lab has dozens, a typo has millions


def expand_range(text: str) -> list[str] | None:
    """``node[01:16]`` -> ``node01`` ... ``node16`` (inclusive, zero padding kept); None without a range."""
    found = list(RANGE_PATTERN.finditer(text))
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"{text!r} has {len(found)} ranges: use one [low:high] per name")
    match = found[0]
    low, high = match.group(1), match.group(2)
    if int(low) > int(high):
        raise ValueError(f"the range [{low}:{high}] in {text!r} is inverted: write [{high}:{low}]")
    if int(high) - int(low) >= MAX_RANGE:
        raise ValueError(f"the range [{low}:{high}] in {text!r} has more than {MAX_RANGE} values")
    width = len(low) if low.startswith("0") and len(low) > 1 else 0
    return [f"{text[:match.start()]}{number:0{width}d}{text[match.end():]}"
            for number in range(int(low), int(high) + 1)]


class _FleetError(ValueError):
    def __init__(self, loc: list[Any], message: str) -> None:
        super().__init__(message)
        self.loc = loc


@dataclass
class _Origins:
    """Where expanded entries come from in the file, to name the right line in an error."""

    hosts: dict[str, str] = dataclass_field(default_factory=dict)  # alias -> the key that defines it
    workers: list[tuple[int, bool]] = dataclass_field(default_factory=list)  # expanded index -> (file index, from hosts:)

    def loc(self, loc: list[Any]) -> list[Any]:
        loc = list(loc)
        if len(loc) > 1 and loc[0] == "hosts" and loc[1] in self.hosts:
            loc[1] = self.hosts[loc[1]]
        if len(loc) > 1 and loc[0] == "workers" and isinstance(loc[1], int) and loc[1] < len(self.workers):
            loc[1], expanded = self.workers[loc[1]]
            if expanded and len(loc) > 2 and loc[2] in ("host", "name"):
                loc[2] = "hosts" if loc[2] == "host" else "name"
        return loc


def _members(pattern: Any, loc: list[Any], aliases: list[str], groups: dict[str, list[str]]) -> list[str]:
    """The aliases a file's ``hosts:`` item names: a group, an alias, a range or a glob (each must exist)."""
    if not isinstance(pattern, str):
        raise _FleetError(loc, f"{pattern!r} is not a host, group, range or glob name")
    if pattern in groups:
        return groups[pattern]
    if pattern in aliases or pattern == LOCAL_HOST:
        return [pattern]
    try:
        names = expand_range(pattern)
    except ValueError as exc:
        raise _FleetError(loc, str(exc)) from None
    if names is not None:
        unknown = [name for name in names if name not in aliases]
        if unknown:
            raise _FleetError(loc, f"{pattern!r} names {unknown[0]!r}, which is not in `hosts`")
        return names
    if any(c in pattern for c in "*?["):
        matched = [alias for alias in aliases if fnmatch.fnmatchcase(alias, pattern)]
        if not matched:
            raise _FleetError(loc, f"the glob {pattern!r} matches no host of `hosts`")
        return matched
    known = ", ".join(list(groups)[:8]) or "none"
    raise _FleetError(loc, f"{pattern!r} is neither a group (known: {known}) nor a host of `hosts`")


def _item_locs(value: Any, loc: list[Any]) -> list[tuple[Any, list[Any]]]:
    return [(item, [*loc, index]) for index, item in enumerate(value)] if isinstance(value, list) else [(value, loc)]


def expand_fleet(data: dict[str, Any]) -> tuple[dict[str, Any], _Origins]:
    """The file's compact forms -> one entry per host: ``hosts`` ranges, ``groups`` patterns resolved to
    aliases, and worker groups over ``hosts:`` turned into one entry per host named ``<name>-<alias>``."""
    data, origins = dict(data), _Origins()
    hosts = data.get("hosts")
    if isinstance(hosts, dict):
        expanded: dict[Any, Any] = {}
        for key, settings in hosts.items():
            names = _host_names(key, settings)
            address = settings.get("address") if isinstance(settings, dict) else None
            addresses = _address_range(key, address, names)
            for index, name in enumerate(names):
                if name in expanded:
                    raise _FleetError(["hosts", key], f"host {name!r} is defined twice (also by "
                                      f"{origins.hosts[name]!r}): remove one")
                own = dict(settings) if isinstance(settings, dict) else settings
                if addresses is not None:
                    own["address"] = addresses[index]
                expanded[name], origins.hosts[name] = own, key
        data["hosts"] = expanded
    aliases = [alias for alias in (data.get("hosts") or {}) if isinstance(alias, str)]
    groups: dict[str, list[str]] = {}
    if isinstance(data.get("groups"), dict):
        resolved: dict[Any, Any] = {}
        for name, spec in data["groups"].items():
            if isinstance(name, str) and name in aliases:
                raise _FleetError(["groups", name], f"group {name!r} has the name of a host: rename one of them")
            if isinstance(spec, dict) and "hosts" in spec:
                members: list[str] = []
                for item, loc in _item_locs(spec["hosts"], ["groups", name, "hosts"]):
                    members += _members(item, loc, aliases, groups)
                spec = {**spec, "hosts": list(dict.fromkeys(members))}
                groups[name] = spec["hosts"]
            resolved[name] = spec
        data["groups"] = resolved
    if isinstance(data.get("workers"), list):
        workers: list[Any] = []
        for index, entry in enumerate(data["workers"]):
            if isinstance(entry, dict) and "group" in entry:
                raise _FleetError(["workers", index, "group"], "`group` is set by clusterctl: name the group with "
                                  "`name` and its hosts with `hosts`")
            if not (isinstance(entry, dict) and "hosts" in entry):
                shifted = len(workers) != index  # an earlier `hosts:` entry expanded to several
                if shifted and isinstance(entry, dict) and entry.get("name") is None and isinstance(entry.get("host"), str):
                    # the default name counts entries as written, not as expanded
                    entry = {**entry, "name": re.sub(r"[^A-Za-z0-9_.-]", "_", entry["host"]) + f"-g{index}"}
                workers.append(entry)
                origins.workers.append((index, False))
                continue
            if "host" in entry:
                raise _FleetError(["workers", index, "hosts"], "give `host` (one host) or `hosts`, not both")
            members = []
            for item, loc in _item_locs(entry["hosts"], ["workers", index, "hosts"]):
                members += _members(item, loc, aliases, groups)
            if not members:
                raise _FleetError(["workers", index, "hosts"], "name at least one host or group")
            name = entry.get("name")
            for alias in dict.fromkeys(members):
                own = {key: value for key, value in entry.items() if key != "hosts"}
                safe_alias = re.sub(r"[^A-Za-z0-9_.-]", "_", alias)
                own.update(host=alias, group=name if isinstance(name, str) else f"g{index}",
                           name=f"{name}-{safe_alias}" if isinstance(name, str) else f"{safe_alias}-g{index}")
                workers.append(own)
                origins.workers.append((index, True))
        data["workers"] = workers
    return data, origins


def _host_names(key: Any, settings: Any) -> list[Any]:
    if not isinstance(key, str):
        return [key]
    try:
        names = expand_range(key)
    except ValueError as exc:
        raise _FleetError(["hosts", key], str(exc)) from None
    return [key] if names is None else names


def _address_range(key: Any, address: Any, names: list[Any]) -> list[str] | None:
    if not isinstance(address, str):
        return None
    try:
        addresses = expand_range(address)
    except ValueError as exc:
        raise _FleetError(["hosts", key, "address"], str(exc)) from None
    if addresses is not None and len(addresses) != len(names):
        raise _FleetError(["hosts", key, "address"], f"{address!r} has {len(addresses)} value(s) but {key!r} has "
                          f"{len(names)}: a range in `address` pairs with the alias's range by position")
    return addresses


def _merge(base: HostSettings, override: HostSettings) -> HostSettings:
    values = base.model_dump()
    for key, value in override.model_dump(exclude_unset=True).items():
        if key in ("env", "dask_config"):
            values[key] = {**values[key], **value}
        elif key == "setup":
            values["setup"] = [*values["setup"], *value]
        elif value is not None:
            values[key] = value
    return HostSettings(**values)


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file; ``InvalidInputError`` with file:line: key.path on failure."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file", "pass the path of your cluster.yaml, or run `clusterctl init`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read: {exc}") from None
    return parse_inventory(text, str(path))


MAX_YAML_DEPTH = 32  # an inventory nests a few levels; a bomb nests thousands
MAX_YAML_NODES = 100_000  # values after aliases are expanded; a real inventory has hundreds
MAX_QUOTED = 200  # characters of an error message: a huge value is cut, not printed whole


def _check_size(root: yaml.Node | None, source: str) -> None:
    """Refuse nesting beyond ``MAX_YAML_DEPTH`` and aliases that expand beyond ``MAX_YAML_NODES``
    values (a "billion laughs"), before anything expands them. Aliases share their node, so each
    node's expanded size is counted once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)] if root is not None else []
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise InvalidInputError(f"{source}:{node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep",
                                    "an inventory needs only a few levels")
        children = [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise InvalidInputError(f"{source}: its aliases expand to more than {MAX_YAML_NODES} values",
                                        "use fewer `*alias` references")
        elif id(node) not in sizes:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "… (cut)"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers: `4:30` stays the text a user means (a
    port range), not the number 270; YAML 1.2 dropped them too."""


def _number_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    if ":" in node.value:
        return node.value
    if node.tag.endswith(":int"):
        return loader.construct_yaml_int(node)
    return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _number_or_text)
_Loader.add_constructor("tag:yaml.org,2002:float", _number_or_text)


def parse_inventory(text: str, source: str = "<inventory>") -> Inventory:
    try:
        root = yaml.compose(text)  # nodes, aliases not expanded: checked before they are
        _check_size(root, source)
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except RecursionError:
        raise InvalidInputError(f"{source}: nested too deeply", "an inventory needs only a few levels") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source}: the inventory must be a YAML mapping with name, hosts, scheduler and workers")
    try:
        data, origins = expand_fleet(data)
    except _FleetError as exc:
        raise InvalidInputError(_locate(root, exc.loc, source, str(exc))) from None
    try:
        inventory = Inventory.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(_describe(exc, root, source, origins)) from None
    inventory._origins = [index for index, _ in origins.workers]
    for loc, message in inventory.problems():
        raise InvalidInputError(_locate(root, origins.loc(loc), source, message))
    named: list[tuple[list[Any], str]] = [(["hosts", alias], alias) for alias in inventory.hosts]
    named += [(["scheduler", "host"], inventory.scheduler.host)]
    named += [(["workers", i, "host"], group.host) for i, group in enumerate(inventory.workers)]
    for loc, host in named:
        line = _line_of(root, origins.loc(loc))
        if line and host not in inventory._where:
            inventory._where[host] = f"{source}:{line}"
    return inventory


def _yaml_error(exc: yaml.YAMLError, source: str) -> InvalidInputError:
    """The YAML parser's complaint in the user's words: what is wrong with which line."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context_mark", None)
    above = f" (line {context.line + 1})" if context is not None and mark is not None and context.line < mark.line else ""
    if problem.startswith("expected <block end>"):
        return InvalidInputError(f"{where}: this line is indented differently from the lines above it{above}",
                                 "keys of one mapping (and items of one list) start in the same column")
    if problem == "mapping values are not allowed here":
        return InvalidInputError(f"{where}: a `key: value` where none can be: this line is indented further "
                                 "than the key above it, or a value on it needs quotes",
                                 "indent it like the key above it; quote values that contain ': '")
    if "'\\t'" in problem:
        return InvalidInputError(f"{where}: a tab character: YAML indents with spaces only",
                                 "replace the tab with spaces")
    return InvalidInputError(f"{where}: malformed YAML: {_cut(problem)}", "check indentation and quoting")


def _locate(root: yaml.Node | None, loc: list[Any], source: str, message: str) -> str:
    line = _line_of(root, loc)
    where = f"{source}:{line}" if line else source
    key_path, message = _cut(_format_loc(loc)), _cut(message)
    return f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}"


def _describe(exc: ValidationError, root: yaml.Node | None, source: str, origins: _Origins | None = None) -> str:
    """The first validation error as ``file:line: key.path: message (did you mean ...?)``."""
    # An unknown key explains the other errors (a misspelt required key), so it comes first.
    # Of a union's branches, the deepest error says the most (`tls: {ca_file: ...}` vs `tls: auto`).
    errors = sorted(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", -len(e["loc"])))
    error = errors[0]
    loc = [part for part in error["loc"] if not _is_branch_tag(part)]
    if origins is not None:
        loc = origins.loc(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        allowed = _allowed_keys(loc)
        suggestion = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if suggestion:
            message += f" (did you mean {suggestion[0]!r}?)"
        elif "env" in allowed and ENV_NAME_PATTERN.fullmatch(str(loc[-1])) and str(loc[-1]).isupper():
            message += f" (an environment variable? did you mean {_format_loc([*loc[:-1], 'env', loc[-1]])}?)"
    elif kind == "missing":
        message = "this key is required"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind not in ("value_error", "assertion_error") and "input" in error:
            message += f" (got {_cut(repr(error['input']))})"
    return _locate(root, loc, source, message)


def _is_branch_tag(part: Any) -> bool:
    """pydantic's names for validators and union branches in an error's location."""
    text = str(part)
    return text.startswith(("function-", "literal[")) or text in ("TlsFilesSpec", "str", "int", "float")


def _format_loc(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(root: yaml.Node | None, loc: list[Any]) -> int | None:
    """The 1-based line of the deepest node on ``loc`` that the YAML source has."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part or (part == "nworkers" and key.value == "nprocs"):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    if line is None and root is not None:
        line = root.start_mark.line + 1
    return line


def _allowed_keys(loc: list[Any]) -> list[str]:
    """Keys allowed in the mapping that holds ``loc[-1]``, for "did you mean"."""
    model: type[BaseModel] | None = Inventory
    chosen_name = False  # the part after `hosts` or `groups` is a name the user chose
    for part in loc[:-1]:
        if isinstance(part, int) or model is None or chosen_name:
            chosen_name = False
            continue
        if model is Inventory and part in ("hosts", "groups"):
            model, chosen_name = (HostSettings if part == "hosts" else GroupSpec), True
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        model = _model_in(annotation)
        if model is None and field is not None and part in ("workers",):
            model = WorkerGroup
    if model is None:
        model = HostSettings
    return list(model.model_fields) + (["nprocs", "hosts"] if model is WorkerGroup else [])


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
