"""Transports: how clusterctl reaches a host. ``open_transport`` picks one from the inventory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterctl.transport.base import CommandResult, Transport

if TYPE_CHECKING:
    from clusterctl.inventory import HostSettings

__all__ = ["CommandResult", "Transport", "open_transport"]


def open_transport(alias: str, settings: HostSettings) -> Transport:
    """A lazily connecting transport for ``alias``, whose settings have defaults merged in."""
    if settings.connection == "local":
        from clusterctl.transport.local import LocalTransport

        return LocalTransport(alias, settings.address)
    from clusterctl.transport.ssh import SSHTransport  # the only importer of paramiko's module

    return SSHTransport(alias, settings)
