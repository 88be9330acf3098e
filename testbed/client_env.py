"""An isolated environment for a clusterctl client of the bed: its own HOME (so ~/.ssh), CLUSTERCTL_HOME
and ssh config, and no ssh-agent, SSH password or scheduler address inherited from whoever runs it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

UNSET = ("SSH_AUTH_SOCK", "CLUSTERCTL_SSH_PASSWORD", "DASK_SCHEDULER_ADDRESS")


@dataclass(frozen=True)
class SshEnv:
    """Where the isolated environment keeps clusterctl's and ssh's files."""

    home: Path  # $HOME: ~/.ssh/known_hosts and ~/.ssh/config live below it
    clusterctl_home: Path  # $CLUSTERCTL_HOME: clusterctl's own known_hosts
    ssh_config: Path  # $CLUSTERCTL_SSH_CONFIG (not created)

    @classmethod
    def under(cls, base: Path) -> SshEnv:
        """An environment in ``base``, with an empty home directory."""
        env = cls(base / "home", base / "clusterctl-home", base / "ssh_config")
        env.home.mkdir(parents=True)
        return env

    @property
    def known_hosts(self) -> Path:
        return self.clusterctl_home / "known_hosts"

    def variables(self) -> dict[str, str | None]:
        """What to change in an environment: variables to set, and (as None) variables to remove."""
        return {
            "HOME": str(self.home),
            "CLUSTERCTL_HOME": str(self.clusterctl_home),
            "CLUSTERCTL_SSH_CONFIG": str(self.ssh_config),
            **dict.fromkeys(UNSET),
        }

    @contextlib.contextmanager
    def applied(self) -> Iterator[SshEnv]:
        """This process's environment (so also its children's) for the block; restored after it."""
        changes = self.variables()
        saved = {name: os.environ.get(name) for name in changes}
        _change(os.environ, changes)
        try:
            yield self
        finally:
            _change(os.environ, saved)


def environ_with(changes: Mapping[str, str | None]) -> dict[str, str]:
    """A copy of this process's environment with ``changes``; None removes a variable."""
    env = dict(os.environ)
    _change(env, changes)
    return env


def _change(env: MutableMapping[str, str], changes: Mapping[str, str | None]) -> None:
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
