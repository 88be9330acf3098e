"""Preflight: every host's python runs, distributed imports, versions equal the scheduler host's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusterctl.errors import ClusterctlError
from clusterctl.fanout import fan_out, values_or_raise
from clusterctl.hosts import Host

COMPARED = ("python", "dask", "distributed", "cloudpickle", "msgpack")


class VersionMismatchError(ClusterctlError):
    """Hosts run different versions; carries the host x package table for render."""

    def __init__(self, message: str, report: PreflightReport) -> None:
        super().__init__(message, "install the same versions everywhere, or pass --allow-version-mismatch")
        self.report = report


@dataclass
class PreflightReport:
    reference_host: str
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> package -> version
    mismatched: dict[str, list[str]] = field(default_factory=dict)  # host -> packages that differ


def preflight(hosts: dict[str, Host], reference_host: str, allow_mismatch: bool = False,
              reference: dict[str, Any] | None = None) -> PreflightReport:
    """Ask every host for its versions at once and compare them with ``reference_host``'s.

    ``reference`` stands in for the reference host's versions when it is not among ``hosts``
    (add-worker compares with what `up` recorded of the scheduler host).
    """
    versions = values_or_raise("preflight", fan_out(hosts, lambda alias: hosts[alias].versions()))
    report = PreflightReport(reference_host=reference_host, versions=versions)  # type: ignore[arg-type]
    for host, found in report.versions.items():
        errors = found.get("errors") or {}
        if "distributed" in errors or "dask" in errors:
            module = "distributed" if "distributed" in errors else "dask"
            raise ClusterctlError(f"{host}: {found.get('executable', 'python')} cannot import {module}: {errors[module]}",
                                  f"install dask and distributed there (`{found.get('executable')} -m pip install "
                                  "distributed`), or set `python:` for this host")
    expected = reference or report.versions.get(reference_host)
    if expected is None:
        return report
    for host, found in report.versions.items():
        differing = [package for package in COMPARED if found.get(package) != expected.get(package)]
        if differing:
            report.mismatched[host] = differing
    if report.mismatched and not allow_mismatch:
        detail = "; ".join(
            f"{host} has " + ", ".join(f"{p} {report.versions[host].get(p)} (scheduler host: {expected.get(p)})"
                                       for p in packages)
            for host, packages in report.mismatched.items())
        raise VersionMismatchError(f"version mismatch with scheduler host {reference_host}: {detail}", report)
    return report
