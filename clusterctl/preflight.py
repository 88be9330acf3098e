"""Preflight: every host's python runs, distributed imports, versions equal the scheduler host's."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from clusterctl.errors import ClusterctlError, HostError
from clusterctl.group import HostGroup

COMPARED = ("python", "dask", "distributed", "cloudpickle", "msgpack")
MISMATCH_HINT = "install the same versions everywhere, or pass --allow-version-mismatch"


@dataclass
class PreflightReport:
    reference_host: str
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> package -> version
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # host -> packages that differ
    packages: tuple[str, ...] = COMPARED  # what was compared, in the order a table shows it


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


def differing(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [package for package in COMPARED if found.get(package) != expected.get(package)]


def preflight(hosts: HostGroup, reference_host: str, allow_mismatch: bool = False,
              reference: dict[str, Any] | None = None) -> PreflightReport:
    """Ask every host for its versions at once and compare them with ``reference_host``'s.

    ``reference`` stands in for the reference host's versions when it is not among ``hosts``
    (add-worker compares with what `up` recorded of the scheduler host).
    """
    versions = hosts.run(lambda host: host.versions()).values_or_raise("preflight")
    report = PreflightReport(reference_host=reference_host, versions=versions)
    for alias, found in versions.items():
        problem = import_problem(alias, found, hosts[alias].settings.connection == "local")
        if problem is not None:
            raise problem
    expected = reference or versions.get(reference_host)
    if expected is None:
        return report
    for alias, found in versions.items():
        packages = differing(found, expected)
        if packages:
            report.mismatched[alias] = packages
    if report.mismatched and not allow_mismatch:
        detail = "; ".join(
            f"{alias} has " + ", ".join(f"{p} {versions[alias].get(p)} (scheduler host: {expected.get(p)})"
                                        for p in packages)
            for alias, packages in report.mismatched.items())
        raise VersionMismatchError(f"version mismatch with scheduler host {reference_host}: {detail}", report)
    return report
