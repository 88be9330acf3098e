"""Preflight: every host's python runs, distributed is installed, the environment's fingerprint
(python major.minor and what `Client.get_versions(check=True)` compares) equals the scheduler host's;
this machine, where a client usually runs, differing is a warning."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterctl.agent import FINGERPRINT
from clusterctl.errors import ClusterctlError, HostError
from clusterctl.group import HostGroup
from clusterctl.host import Host
from clusterctl.inventory import Inventory, WorkerGroup
from clusterctl.progress import Progress, SilentProgress
from clusterctl.records import Gpu

COMPARED = ("python", *FINGERPRINT)
ALWAYS_SHOWN = ("python", "dask", "distributed")  # columns of the mismatch table, besides those that differ
MISMATCH_HINT = "install the same versions everywhere, or pass --allow-version-mismatch"


@dataclass
class PreflightReport:
    reference_host: str
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> package -> version
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # host -> packages that differ
    packages: tuple[str, ...] = COMPARED  # what was compared, in the order a table shows it
    local: dict[str, Any] = field(default_factory=dict)  # this machine's versions, when compared
    warnings: list[str] = field(default_factory=list)  # this machine differs from the hosts
    free_port: dict[str, Any] | None = None  # the answer to ``free_port`` on the reference host
    gpus: dict[str, list[Gpu]] = field(default_factory=dict)  # host -> its GPUs, where asked


class VersionMismatchError(ClusterctlError):
    """Hosts run different versions; carries the host x package table for render."""

    def __init__(self, message: str, report: PreflightReport) -> None:
        super().__init__(message, MISMATCH_HINT)
        self.report = report


def import_problem(alias: str, found: dict[str, Any], local: bool = False) -> HostError | None:
    """The error for a host whose python cannot import dask or distributed, else None."""
    errors = found.get("errors") or {}
    module = next((m for m in ("distributed", "dask") if m in errors), None)
    if module is None:
        return None
    executable = found.get("executable") or "python"
    fix = f"install dask and distributed there (`{executable} -m pip install distributed`)"
    if local and executable != sys.executable:
        # The interpreter clusterctl runs under has distributed (it is a dependency) and is on this host.
        fix = f"set `python: {sys.executable}` for this host (it has distributed: clusterctl runs under it), or {fix}"
        return HostError(alias, f"{executable} cannot import {module}: {errors[module]}", fix)
    return HostError(alias, f"{executable} cannot import {module}: {errors[module]}",
                     f"{fix}, or set `python:` for this host")


def gpu_probes(inventory: Inventory, groups: list[WorkerGroup] | None = None) -> dict[str, dict[str, Any]]:
    """Host -> the env and setup of its (first) worker group with `gpus:` (of ``groups``, else of the
    inventory), to run nvidia-smi as that group's workers would run."""
    probes: dict[str, dict[str, Any]] = {}
    for group in inventory.workers if groups is None else groups:
        if group.gpus is not None and group.host not in probes:
            settings = inventory.process_settings(group.host, group)
            probes[group.host] = {"env": settings.env, "setup": list(group.setup)}
    return probes


def gpu_problem(alias: str, gpus: list[Gpu] | str | None, option: str | None = None) -> HostError | None:
    """The error for a host asked for its GPUs that has none (``gpus``: why, as the agent said), else
    None. ``option``: the command-line option that asked (`add-worker --gpus`), not a worker group."""
    if isinstance(gpus, list):
        return None
    why = gpus or "nvidia-smi gave no answer"
    if option is not None:
        return HostError(alias, f"{option} asks for its GPUs but {why}",
                         "install the NVIDIA driver there, put nvidia-smi on the host's PATH (its `env: {PATH: ...}` "
                         "or `setup:` in the inventory), or choose another host")
    return HostError(alias, f"its worker group has `gpus:` but {why}",
                     "install the NVIDIA driver there, put nvidia-smi on the group's PATH (`env: {PATH: ...}` "
                     "or `setup:`), or take the host out of the GPU group")


def compared(packages: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """python, what distributed compares, then the inventory's `environment: {packages}`."""
    return tuple(dict.fromkeys([*COMPARED, *packages]))


def comparable(package: str, version: Any) -> Any:
    """Python is compared by major.minor (what pickled code and wheels depend on), the rest exactly."""
    if package == "python" and isinstance(version, str):
        return ".".join(version.split(".")[:2])
    return version


def differing(found: dict[str, Any], expected: dict[str, Any], packages: tuple[str, ...] = COMPARED) -> list[str]:
    return [p for p in packages if comparable(p, found.get(p)) != comparable(p, expected.get(p))]


def local_warnings(local: dict[str, Any], expected: dict[str, Any], where: str,
                   packages: tuple[str, ...] = COMPARED) -> list[str]:
    """One warning per package this machine has in another version than ``where``."""
    return [f"this machine has {p} {local.get(p) or 'not installed'}, {where} has {expected.get(p) or 'not installed'}: "
            "a Client run here may fail to talk to the cluster; run it on a host, or install the same version here"
            for p in differing(local, expected, packages)]


def local_versions(packages: tuple[str, ...] = COMPARED) -> dict[str, Any]:
    """This machine's fingerprint, read as the hosts' agents read theirs (metadata, no import)."""
    import platform
    from importlib import metadata

    found: dict[str, Any] = {"python": platform.python_version()}
    for package in packages:
        if package != "python":
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                found[package] = None
    return found


def preflight(hosts: HostGroup, reference_host: str, allow_mismatch: bool = False,
              reference: dict[str, Any] | None = None, packages: tuple[str, ...] | list[str] = (),
              compare_local: bool = False, gpu_probes: dict[str, dict[str, Any]] | None = None,
              progress: Progress | None = None, gpu_option: str | None = None,
              free_port: tuple[str, int] | None = None,
              refuse_port: Callable[[dict[str, Any]], None] | None = None) -> PreflightReport:
    """Ask every host for its versions at once and compare them with ``reference_host``'s.

    ``reference`` stands in for the reference host's versions when it is not among ``hosts``
    (add-worker compares with what `up` recorded of the scheduler host). ``packages`` are compared
    besides python and what distributed compares; with ``compare_local`` this machine is compared
    too, and a difference is a warning in the report. ``gpu_probes`` (host -> a GPU worker group's
    env and setup) asks those hosts for their GPUs in the same round trip; a host without one is refused
    (naming ``gpu_option``, the command-line option that asked, if any).
    ``progress`` hears of each host as it answers. With ``free_port`` (address, port) the reference
    host says in the same round trip whether that port is free (``report.free_port``), and
    ``refuse_port`` sees that answer first: a taken port is refused before any version problem.
    """
    names = compared(packages)
    extra = [p for p in names if p not in COMPARED]
    probes = gpu_probes or {}
    shown = progress or SilentProgress()

    def ask(host: Host) -> tuple[dict[str, Any], list[Gpu] | str | None, dict[str, Any] | None]:
        try:
            found = host.check(extra, probes.get(host.alias), free_port if host.alias == reference_host else None)
        except ClusterctlError as exc:
            shown.host(host.alias, "failed", exc.reason if isinstance(exc, HostError) else exc.message)
            raise
        shown.host(host.alias, "checked")
        return found

    answers = hosts.run(ask).values_or_raise("preflight")
    versions = {alias: found for alias, (found, _, _) in answers.items()}
    report = PreflightReport(reference_host=reference_host, versions=versions, packages=names)
    if reference_host in answers:
        report.free_port = answers[reference_host][2]
        if report.free_port is not None and refuse_port is not None:
            refuse_port(report.free_port)
    for alias, found in versions.items():
        problem = import_problem(alias, found, hosts[alias].settings.connection == "local")
        if problem is not None:
            raise problem
    for alias, (_, gpus, _) in answers.items():
        if alias not in probes:
            continue
        problem = gpu_problem(alias, gpus, gpu_option)
        if problem is not None:
            raise problem
        assert isinstance(gpus, list)
        report.gpus[alias] = gpus
    expected = reference or versions.get(reference_host)
    if expected is None:
        return report
    if reference:  # recorded by an earlier `up`, perhaps of fewer packages: compare what it has
        names = tuple(p for p in names if p in reference)
    for alias, found in versions.items():
        different = differing(found, expected, names)
        if different:
            report.mismatched[alias] = different
    if compare_local:
        report.local = local_versions(names)
        report.warnings += local_warnings(report.local, expected, f"the scheduler host {reference_host}", names)
    if report.mismatched and not allow_mismatch:
        detail = "; ".join(
            f"{alias} has " + ", ".join(f"{p} {versions[alias].get(p)} (scheduler host: {expected.get(p)})"
                                        for p in different)
            for alias, different in report.mismatched.items())
        raise VersionMismatchError(f"version mismatch with scheduler host {reference_host}: {detail}", report)
    return report
