"""Transports: how clusterctl reaches a host. ``open_transport`` picks one from the inventory."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clusterctl.transport.base import CommandResult, Transport

if TYPE_CHECKING:
    from clusterctl.inventory import HostSettings

__all__ = ["CommandResult", "Transport", "open_transport"]


def open_transport(alias: str, settings: HostSettings,
                   password_prompt: Callable[[str], str] | None = None) -> Transport:
    """A lazily connecting transport for ``alias``, whose settings have defaults merged in.

    ``password_prompt(host)`` is asked for a password when keys fail and none is in the
    environment; the CLI supplies it, so no transport talks to the terminal itself.
    """
    if settings.connection == "local":
        from clusterctl.transport.local import LocalTransport

        return LocalTransport(alias, settings.address)
    from clusterctl.transport.ssh import SSHTransport  # the only importer of paramiko's module

    return SSHTransport(alias, settings, password_prompt)
