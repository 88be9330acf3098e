"""The same environment on every host, offline: a wheelhouse built here, shipped over SSH, installed
into a venv under each host's run directory.

For each distinct host platform and python (``Target``, from the host's agent), ``build_wheelhouse``
collects one wheel per requirement. The requirements are, by default, the versions installed here
of dask, distributed, `environment: packages` and everything they need (``resolve_installed``); with
`environment: requirements` pip resolves that file for the target. Each wheel comes from, in order:
the inventory's `wheelhouse:`, clusterctl's wheel cache, a wheel rebuilt from the distribution
installed here (when its tags fit the target; its files are checked against its RECORD), or
`pip download` for the target's platform (never with a `wheelhouse:`, which means "no index").

``sync_hosts`` then asks each host what it has (one agent call), ships only the wheels it lacks
(by sha256), and has the agent create or update the venv with `pip install --no-index`. When the
venv already holds exactly this wheelhouse, nothing is shipped and nothing is installed.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from clusterctl import paths
from clusterctl.errors import ClusterctlError, HostError, InvalidInputError
from clusterctl.group import HostGroup
from clusterctl.host import Host
from clusterctl.inventory import EnvironmentSpec, HostSettings, Inventory
from clusterctl.progress import Progress
from clusterctl.records import AnswerError, field_of

ROOTS = ("dask", "distributed")  # what every host needs, besides `packages:`
INSTALLER = "pip"  # the venv is made without pip; this wheel runs pip from the wheelhouse itself
INSTALL_TIMEOUT = 900.0  # seconds for a host to create the venv and install into it
PIP_TIMEOUT = 900.0  # seconds for `pip download` here
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # rebuilt wheels are byte-for-byte reproducible, so their hash is stable


class SyncError(ClusterctlError):
    """The environment could not be built or installed; nothing was started."""


# --- where a wheel must run -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A host's interpreter and platform, as its agent reports them: what a wheel must be built for."""

    implementation: str  # cpython
    python: str  # "3.11"
    soabi: str  # "cpython-311-x86_64-linux-gnu"
    platform: str  # sysconfig's: "linux-x86_64"
    libc: str = ""  # "glibc" or ""
    libc_version: str = ""  # "2.36"

    @classmethod
    def from_answer(cls, answer: Any) -> Target:
        if not isinstance(answer, dict):
            raise AnswerError("'host' is not an object")
        return cls(**{name: field_of(answer, name, str) for name in
                      ("implementation", "python", "soabi", "platform", "libc", "libc_version")})

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)

    @property
    def abi(self) -> str:
        if self.implementation == "cpython":
            parts = self.soabi.split("-")
            return f"cp{parts[1]}" if len(parts) > 1 else f"cp{self.version[0]}{self.version[1]}"
        return re.sub(r"[^a-z0-9]", "_", self.soabi.split("-")[0] if self.soabi else "none")

    @cached_property
    def platforms(self) -> list[str]:
        """Platform tags, most specific first: manylinux_2_N..2_5 (and their legacy names), then linux."""
        system, _, rest = self.platform.partition("-")
        arch = re.sub(r"[-.]", "_", rest)
        if system != "linux":
            return [re.sub(r"[-.]", "_", self.platform)]
        tags: list[str] = []
        if self.libc == "glibc" and re.fullmatch(r"2\.\d+", self.libc_version or ""):
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            for minor in range(int(self.libc_version.split(".")[1]), 4, -1):
                tags.append(f"manylinux_2_{minor}_{arch}")
                if minor == 17 or (minor in legacy and arch in ("x86_64", "i686")):
                    tags.append(f"{legacy[minor]}_{arch}")
        return [*tags, f"linux_{arch}"]

    @property
    def key(self) -> str:
        """One wheelhouse per key: ``cp311-manylinux_2_36_x86_64``."""
        return f"{self.abi}-{self.platforms[0]}"

    @cached_property
    def tags(self) -> dict[Any, int]:
        """Every tag a wheel may carry to install here -> its rank (lower is better)."""
        from packaging import tags

        if self.implementation == "cpython":
            found = [*tags.cpython_tags(self.version, [self.abi], self.platforms),
                     *tags.compatible_tags(self.version, f"cp{self.version[0]}{self.version[1]}", self.platforms)]
        else:
            found = [*tags.generic_tags(self.abi, [self.abi], self.platforms),
                     *tags.compatible_tags(self.version, None, self.platforms)]
        return {tag: rank for rank, tag in reversed(list(enumerate(found)))}

    def markers(self) -> dict[str, str]:
        """The PEP 508 marker environment of the host, for the requirements that depend on it."""
        machine = self.platform.partition("-")[2] or self.platform
        system = self.platform.partition("-")[0]
        return {"implementation_name": self.implementation, "implementation_version": f"{self.python}.0",
                "os_name": "posix", "platform_machine": machine, "platform_release": "", "platform_version": "",
                "platform_system": {"linux": "Linux", "macosx": "Darwin"}.get(system, system.capitalize()),
                "platform_python_implementation": {"cpython": "CPython", "pypy": "PyPy"}.get(
                    self.implementation, self.implementation),
                "python_version": self.python, "python_full_version": f"{self.python}.0",
                "sys_platform": {"macosx": "darwin"}.get(system, system), "extra": ""}

    def pip_download_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--python-version", self.python, "--implementation",
                {"cpython": "cp", "pypy": "pp"}.get(self.implementation, self.implementation)]
        for abi in (self.abi, "abi3", "none"):
            args += ["--abi", abi]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args

    def describe(self) -> str:
        return f"{self.implementation} {self.python} on {self.platforms[0]}"


# --- the requirements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    name: str  # as the distribution spells it
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve_installed(roots: Iterable[str], target: Target) -> list[Pin]:
    """The versions installed here of ``roots`` and of everything they need on ``target``.

    Raises ``SyncError`` naming the requirement when something needed is not installed here, or is
    installed in a version another package does not accept.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    environment = target.markers()
    found: dict[str, tuple[metadata.Distribution, set[str]]] = {}
    needed: list[tuple[Any, str]] = []  # (requirement, required by) to check once all are found
    todo: list[tuple[str, frozenset[str], str | None]] = [(name, frozenset(), None) for name in roots]
    while todo:
        name, extras, parent = todo.pop(0)
        key = canonical(name)
        if key in found and extras <= found[key][1]:
            continue
        first = key not in found
        try:
            distribution = metadata.distribution(name) if first else found[key][0]
        except metadata.PackageNotFoundError:
            by = f" (needed by {parent})" if parent else ""
            raise SyncError(f"requirement {name}{by} does not resolve: it is not installed on this machine",
                            f"install it here (`{sys.executable} -m pip install {name}`), or list every "
                            "requirement in a file given as `environment: requirements`") from None
        previous = set() if first else found[key][1]
        found[key] = (distribution, previous | set(extras))
        contexts = ([""] if first else []) + sorted(set(extras) - previous)  # base needs once, then each new extra
        own_name = distribution.metadata["Name"]
        for text in distribution.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None:
                applies = first
            else:
                applies = any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in contexts)
            if applies:
                needed.append((requirement, own_name))
                todo.append((requirement.name, frozenset(requirement.extras), own_name))
    for requirement, parent in needed:
        distribution = found[canonical(requirement.name)][0]
        if not requirement.specifier.contains(distribution.version, prereleases=True):
            raise SyncError(f"requirement {requirement} (needed by {parent}) does not resolve: this machine has "
                            f"{distribution.metadata['Name']} {distribution.version}",
                            "install a version here that fits, or give `environment: requirements`")
    return sorted((Pin(d.metadata["Name"], d.version) for d, _ in found.values()), key=lambda p: canonical(p.name))


# --- wheels -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wheel:
    path: Path
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.path.name


def wheel_at(path: Path) -> Wheel:
    """A wheel file with its sha256; in the cache it is remembered beside it (``<name>.sha256``, with
    the size and mtime it was computed for) so that a no-op sync does not read every wheel again."""
    info = path.stat()
    stamp = f"{info.st_size} {info.st_mtime_ns}"
    remembered = path.with_name(path.name + ".sha256")
    try:
        known_stamp, _, known = remembered.read_text().strip().rpartition(" ")
        if known_stamp == stamp and re.fullmatch(r"[0-9a-f]{64}", known):
            return Wheel(path, known, info.st_size)
    except OSError:
        pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if path.parent == cache_dir():  # not into the user's own `wheelhouse:`
        with contextlib.suppress(OSError):
            remembered.write_text(f"{stamp} {digest.hexdigest()}\n")
    return Wheel(path, digest.hexdigest(), info.st_size)


def cache_dir() -> Path:
    """Where wheels built or downloaded here are kept: ``$CLUSTERCTL_WHEEL_CACHE``, else ``<home>/wheels``."""
    configured = os.environ.get("CLUSTERCTL_WHEEL_CACHE")
    path = Path(configured).expanduser() if configured else paths.home() / "wheels"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def best_wheel(directories: Iterable[Path], pin: Pin, target: Target) -> Path | None:
    """The wheel of ``pin`` in ``directories`` whose tags fit ``target`` best, if any."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    best: tuple[int, Path] | None = None
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in directory.glob("*.whl"):
            try:
                name, version, _, tags = parse_wheel_filename(path.name)
            except InvalidWheelFilename:
                continue
            if name != canonical(pin.name) or str(version) != str(pin.version):
                continue
            ranks = [target.tags[tag] for tag in tags if tag in target.tags]
            if ranks and (best is None or min(ranks) < best[0]):
                best = (min(ranks), path)
    return best[1] if best else None


def wheel_from_installed(distribution: metadata.Distribution, target: Target, directory: Path) -> Path | None:
    """Rebuild the wheel a distribution installed here came from, when its tags fit ``target``.

    Uses the tags its WHEEL file records and the files its RECORD lists (each checked against the
    recorded hash: a modified installation is not shipped). Files installed outside site-packages
    (console scripts, which pip makes again from entry_points.txt) are left out. None when this
    distribution cannot be rebuilt (editable, no RECORD, tags that do not fit, files changed).
    """
    from packaging.tags import parse_tag

    wheel_text, record_text = distribution.read_text("WHEEL"), distribution.read_text("RECORD")
    if not wheel_text or not record_text or _editable(distribution):
        return None
    tags = [tag for line in wheel_text.splitlines() if line.startswith("Tag:")
            for tag in parse_tag(line.partition(":")[2].strip())]
    if not tags or not any(tag in target.tags for tag in tags):
        return None
    name, version = distribution.metadata["Name"], distribution.version
    filename = "{}-{}-{}-{}-{}.whl".format(
        re.sub(r"[-_.]+", "_", name), version, *(".".join(sorted({getattr(t, part) for t in tags}))
                                                 for part in ("interpreter", "abi", "platform")))
    destination = directory / filename
    if destination.exists():
        return destination
    root = Path(str(distribution.locate_file("")))
    dist_info = next((Path(p.parts[0]) for p in map(Path, (str(f) for f in distribution.files or []))
                      if p.parts and p.parts[0].endswith(".dist-info")), None)
    if dist_info is None:
        return None
    skip = {f"{dist_info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    entries: list[tuple[str, bytes]] = []
    for row in csv.reader(io.StringIO(record_text)):
        if not row or row[0].startswith(("..", "/")) or "__pycache__" in row[0] or row[0] in skip:
            continue
        try:
            data = (root / row[0]).read_bytes()
        except OSError:
            return None
        if len(row) > 1 and row[1]:
            algorithm, _, expected = row[1].partition("=")
            actual = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode()
            if actual != expected:
                return None  # changed since it was installed: not what the wheel held
        entries.append((row[0], data))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in sorted(entries):
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    partial = destination.with_name(f".{filename}.{os.getpid()}.part")  # another clusterctl may build it too
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path, data in [*sorted(entries), (f"{dist_info}/RECORD", record.getvalue().encode())]:
            info = zipfile.ZipInfo(path, ZIP_DATE)
            info.external_attr = (0o755 if os.access(root / path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=1)
    os.replace(partial, destination)
    return destination


def _editable(distribution: metadata.Distribution) -> bool:
    try:
        return bool(json.loads(distribution.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable"))
    except (ValueError, AttributeError):
        return True  # unreadable: do not trust it to be a plain installation


def pip_download(requirements: list[str], target: Target, destination: Path, find_links: list[Path],
                 index: bool, deps: bool) -> str:
    """`pip download` for ``target``'s platform into ``destination``; pip's output, or ``SyncError``."""
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
            "-d", str(destination), *target.pip_download_args()]
    argv += [] if deps else ["--no-deps"]
    argv += ["--no-index"] if not index else []
    for directory in find_links:
        if directory.is_dir():
            argv += ["--find-links", str(directory)]
    try:
        done = subprocess.run([*argv, *requirements], capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SyncError(f"pip download for {target.describe()} took longer than {PIP_TIMEOUT:g}s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("ERROR")]
        raise SyncError(f"the requirements do not resolve to wheels for {target.describe()}: "
                        f"{(lines or done.stderr.strip().splitlines() or ['no output'])[-1]}",
                        "check the requirement's name and version, and that a wheel exists for that platform"
                        + (" in the `wheelhouse:`" if not index else ""))
    return done.stdout


@dataclass
class Wheelhouse:
    """The wheels one target needs, and what pip is asked to install from them."""

    target: Target
    requirements: list[str]  # name==version, every one installed into the venv
    wheels: dict[str, Wheel] = field(default_factory=dict)  # filename -> wheel, the installer's too
    installer: str = ""  # the pip wheel's filename

    @property
    def key(self) -> str:
        """Changes exactly when what the venv should hold changes."""
        text = json.dumps([sorted(self.requirements), sorted((n, w.sha256) for n, w in self.wheels.items())])
        return hashlib.sha256(text.encode()).hexdigest()


def build_wheelhouse(spec: EnvironmentSpec, base: Path, target: Target, hosts: list[str],
                     progress: Progress) -> Wheelhouse:
    """One wheel per requirement for ``target`` (see the module's docstring for where each comes from)."""
    provided = [(base / spec.wheelhouse).expanduser()] if spec.wheelhouse else []
    if provided and not provided[0].is_dir():
        raise InvalidInputError(f"environment.wheelhouse: {provided[0]} is not a directory")
    index = not provided
    cache = cache_dir()
    if spec.requirements:
        pins = _resolve_file(spec, base, target, provided, cache, index, progress)
    else:
        pins = resolve_installed(dict.fromkeys([*ROOTS, *spec.packages]), target)
    installer = Pin(INSTALLER, metadata.version(INSTALLER))
    found: dict[Pin, Path] = {}
    missing: list[Pin] = []
    for pin in [*pins, installer]:
        path = best_wheel([*provided, cache], pin, target)
        if path is None:
            try:
                distribution = metadata.distribution(pin.name)
            except metadata.PackageNotFoundError:
                distribution = None
            if distribution is not None and distribution.version == pin.version:
                path = wheel_from_installed(distribution, target, cache)
        if path is None:
            missing.append(pin)
        else:
            found[pin] = path
    if missing and index:
        progress.step(f"downloading {len(missing)} wheel(s) for {target.describe()}")
        pip_download([pin.requirement for pin in missing], target, cache, [], index=True, deps=False)
        for pin in list(missing):
            path = best_wheel([cache], pin, target)
            if path is not None:
                found[pin] = path
                missing.remove(pin)
    if missing:
        names = ", ".join(f"{pin.name} {pin.version}" for pin in missing)
        raise SyncError(f"no wheel of {names} for {target.describe()} (host(s) {', '.join(hosts)})",
                        "put one into the `wheelhouse:` directory (`pip download --only-binary=:all: "
                        f"--platform {target.platforms[0]} --python-version {target.python} {missing[0].requirement}`)"
                        if not index else "that version publishes no wheel for this platform: choose another "
                        "version, or build a wheel and put it into a `wheelhouse:` directory")
    house = Wheelhouse(target, [pin.requirement for pin in pins])
    for pin, path in found.items():
        wheel = wheel_at(path)
        house.wheels[wheel.filename] = wheel
        if pin is installer:
            house.installer = wheel.filename
    return house


def _resolve_file(spec: EnvironmentSpec, base: Path, target: Target, provided: list[Path], cache: Path,
                  index: bool, progress: Progress) -> list[Pin]:
    """`environment: requirements`: pip resolves the file for the target; the wheels land in the cache."""
    from packaging.utils import parse_wheel_filename

    assert spec.requirements is not None
    path = (base / spec.requirements).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"environment.requirements: {path}: no such file")
    progress.step(f"resolving {path.name} for {target.describe()}")
    output = pip_download(["-r", str(path), *ROOTS, *spec.packages], target, cache, [*provided, cache], index=index,
                          deps=True)
    pins: dict[str, Pin] = {}
    for line in output.splitlines():
        match = re.search(r"(?:Saved|File was already downloaded) (\S+\.whl)", line)
        if match:
            name, version, _, _ = parse_wheel_filename(Path(match.group(1)).name)
            pins[str(name)] = Pin(str(name), str(version))
    return sorted(pins.values(), key=lambda p: p.name)


# --- the hosts ------------------------------------------------------------------------------------------


@dataclass
class HostSync:
    """What syncing did on one host."""

    host: str
    target: str  # the wheelhouse's key
    venv_python: str
    shipped: list[str] = field(default_factory=list)  # wheel filenames sent
    shipped_bytes: int = 0
    installed: bool = False
    removed: list[str] = field(default_factory=list)  # distributions no longer required
    seconds: float = 0.0


@dataclass
class SyncReport:
    cluster: str
    hosts: list[HostSync] = field(default_factory=list)
    wheelhouses: dict[str, list[str]] = field(default_factory=dict)  # target key -> requirements
    build_seconds: float = 0.0  # resolving and collecting the wheels here
    seconds: float = 0.0  # the whole sync, from asking the hosts to the last install

    @property
    def changed(self) -> bool:
        return any(h.installed or h.shipped for h in self.hosts)

    @property
    def headline(self) -> str:
        if not self.changed:
            return f"environment up to date on {len(self.hosts)} host(s): nothing shipped, nothing installed"
        shipped = sum(h.shipped_bytes for h in self.hosts)
        count = sum(len(h.shipped) for h in self.hosts)
        installed = sum(h.installed for h in self.hosts)
        return (f"environment synced: {count} wheel(s), {shipped / 1e6:.1f} MB shipped; "
                f"installed on {installed} of {len(self.hosts)} host(s)")

    def document(self) -> dict[str, Any]:
        from clusterctl.report import JSON_SCHEMA_VERSION

        return {"schema": JSON_SCHEMA_VERSION, "cluster": self.cluster, "changed": self.changed,
                "build_seconds": round(self.build_seconds, 3), "seconds": round(self.seconds, 3), "wheelhouses": self.wheelhouses,
                "hosts": [{"host": h.host, "target": h.target, "venv_python": h.venv_python, "shipped": h.shipped,
                           "shipped_bytes": h.shipped_bytes, "installed": h.installed, "removed": h.removed,
                           "seconds": round(h.seconds, 3)} for h in self.hosts]}


def _ask(host: Host) -> tuple[Target, dict[str, Any]]:
    answer = host.call("sync_prepare", run_dir=host.run_dir)

    def parse() -> tuple[Target, dict[str, Any]]:
        for name in ("venv_python", "wheels_dir", "python"):
            field_of(answer, name, str)
        if not isinstance(answer.get("wheels"), dict):
            raise AnswerError("'wheels' is not an object")
        return Target.from_answer(answer.get("host")), answer

    return host._checked("sync_prepare", parse)


def sync_hosts(cluster: str, spec: EnvironmentSpec, base: Path, hosts: HostGroup, progress: Progress) -> SyncReport:
    """Make every host's venv hold the wheelhouse of its platform; the venvs' pythons are in the report."""
    began = time.monotonic()
    progress.step(f"asking {len(hosts)} host(s) what they have")
    asked = hosts.run(_ask).values_or_raise("environment sync")
    for alias, (_, answer) in asked.items():
        if not answer.get("can_venv"):
            host = hosts[alias]
            raise HostError(alias, f"{answer.get('executable') or host.python} cannot create a venv (no `venv` module)",
                            "install the venv module there (Debian/Ubuntu: python3-venv), or set `python:` "
                            "to an interpreter that can run `python -m venv`")
    started = time.monotonic()
    houses: dict[str, Wheelhouse] = {}
    for target, _ in asked.values():
        if target.key not in houses:
            progress.step(f"building the wheelhouse for {target.describe()}")
            users = [a for a, (t, _) in asked.items() if t.key == target.key]
            houses[target.key] = build_wheelhouse(spec, base, target, users, progress)
    report = SyncReport(cluster, wheelhouses={k: h.requirements for k, h in houses.items()},
                        build_seconds=time.monotonic() - started)
    progress.step(f"syncing {len(hosts)} host(s)")
    results = hosts.run(lambda host: _sync_one(host, *asked[host.alias], houses[asked[host.alias][0].key]))
    report.hosts = list(results.values_or_raise("environment sync").values())
    report.seconds = time.monotonic() - began
    return report


def _sync_one(host: Host, target: Target, answer: dict[str, Any], house: Wheelhouse) -> HostSync:
    started = time.monotonic()
    result = HostSync(host.alias, target.key, answer["venv_python"])
    manifest = answer.get("manifest") or {}
    if answer.get("venv_ready") and isinstance(manifest, dict) and manifest.get("key") == house.key:
        result.seconds = time.monotonic() - started
        return result  # the venv holds exactly this wheelhouse
    present = answer["wheels"]
    for filename, wheel in house.wheels.items():
        if present.get(filename) != wheel.sha256:
            host.transport.put_file(f"{answer['wheels_dir']}/{filename}", wheel.path.read_bytes(), 0o600)
            result.shipped.append(filename)
            result.shipped_bytes += wheel.size
    done = host.call("sync_install", timeout=INSTALL_TIMEOUT, run_dir=host.run_dir, key=house.key,
                     wheels={n: w.sha256 for n, w in house.wheels.items()}, installer=house.installer,
                     requirements=house.requirements)
    if not done.get("ok"):
        stage = done.get("stage")
        error = str(done.get("error") or "no detail")
        if stage == "venv":
            raise HostError(host.alias, f"{answer.get('executable')} cannot create a venv at {answer.get('venv')}: {error}",
                            "install the venv module there (Debian/Ubuntu: python3-venv), or set `python:` to an "
                            "interpreter that can run `python -m venv`; `clusterctl sync --clean` removes a broken one")
        if stage == "install":
            raise HostError(host.alias, f"pip could not install the wheelhouse for {target.describe()}: {error}",
                            "a requirement does not resolve from these wheels; check `environment:`")
        raise HostError(host.alias, f"environment sync failed ({stage}): {error}")
    result.installed = True
    result.removed = [str(name) for name in done.get("removed") or []]
    result.seconds = time.monotonic() - started
    return result


def use_venvs(hosts: HostGroup, report: SyncReport) -> dict[str, str]:
    """From now on the hosts' agent runs under their venv's python; alias -> that python."""
    pythons = {h.host: h.venv_python for h in report.hosts}
    for alias, python in pythons.items():
        hosts[alias].settings = hosts[alias].settings.model_copy(update={"python": python})
    return pythons


def synced_inventory(inventory: Inventory, pythons: dict[str, str]) -> Inventory:
    """The inventory with every process on a synced host run by that host's venv python."""
    hosts = dict(inventory.hosts)
    for alias, python in pythons.items():
        hosts[alias] = hosts.get(alias, HostSettings()).model_copy(update={"python": python})
    synced = set(pythons)
    scheduler = inventory.scheduler
    if scheduler.host in synced:
        scheduler = scheduler.model_copy(update={"python": None})
    workers = [group.model_copy(update={"python": None}) if group.host in synced else group
               for group in inventory.workers]
    return inventory.model_copy(update={"hosts": hosts, "scheduler": scheduler, "workers": workers})


def clean_hosts(hosts: HostGroup) -> dict[str, list[str]]:
    """Remove the venv and the shipped wheels on every host: alias -> what was removed."""

    def clean(host: Host) -> list[str]:
        answer = host.call("sync_clean", run_dir=host.run_dir)
        if answer.get("busy"):
            raise HostError(host.alias, f"processes of the cluster still run there ({', '.join(answer['busy'])}) "
                                        "and use the venv", "take the cluster down first: `clusterctl down`")
        return [str(path) for path in answer.get("removed") or []]

    return hosts.run(clean).values_or_raise("sync --clean")
