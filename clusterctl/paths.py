"""Where clusterctl keeps its own files on this machine."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$CLUSTERCTL_HOME``, else ``~/.clusterctl``; created with mode 0700."""
    path = Path(os.environ.get("CLUSTERCTL_HOME") or Path.home() / ".clusterctl").expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)  # it holds keys and the cluster's certificates: ours alone
    return path


def known_hosts_file() -> Path:
    """clusterctl's own known_hosts, where ``accept-new`` remembers keys it trusted."""
    return home() / "known_hosts"


def ssh_config_file() -> Path:
    """The OpenSSH client config to honour: ``$CLUSTERCTL_SSH_CONFIG``, else ``~/.ssh/config``."""
    return Path(os.environ.get("CLUSTERCTL_SSH_CONFIG") or Path.home() / ".ssh" / "config").expanduser()
