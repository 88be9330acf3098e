"""`clusterctl ssh-config HOST`: the ssh settings clusterctl uses for a host, as ``ssh -G`` prints them.

For an inventory host, its ``address``, ``user``, ``port`` and ``identity_file`` override the ssh
config exactly as ``ssh -o HostName=... -l ... -p ... -i ...`` would. Only the keys clusterctl
honours are shown (``transport.ssh_config.KEYS``), in ``ssh -G``'s order, so the output can be
compared line by line with ``ssh -G``'s (README.md, "SSH").
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterctl.errors import InvalidInputError
from clusterctl.inventory import NAME_PATTERN, HostSettings, is_valid_address, load_inventory
from clusterctl.transport import ssh_config as resolution


@dataclass(frozen=True)
class SshConfigReport:
    host: str
    resolved_by: str  # "ssh -G", or "clusterctl" when the OpenSSH client cannot answer
    lines: tuple[tuple[str, str], ...]  # (key, value) as `ssh -G` prints them
    overrides: dict[str, str]  # what the inventory set, by `ssh` option (-o HostName, -l, -p, -i)


def ssh_config(host: str, config: str | None = None) -> SshConfigReport:
    if not (NAME_PATTERN.fullmatch(host) or is_valid_address(host)):
        raise InvalidInputError(f"{host!r} is not a host name, address or inventory alias")
    settings = HostSettings()
    if config is not None:
        settings = load_inventory(config).host(host)
        if settings.connection == "local":
            raise InvalidInputError(f"{host} is `connection: local` in {config}: clusterctl does not use ssh for it")
    options = resolution.options_for(host, settings)
    overrides = {flag: str(value) for flag, value in (("-o HostName", settings.address), ("-l", settings.user),
                                                      ("-p", settings.port), ("-i", settings.identity_file))
                 if value is not None}
    return SshConfigReport(host, options.resolved_by, options.lines, overrides)
