"""`clusterctl init [PATH]`: write a commented starter inventory that works on this machine as is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clusterctl.errors import ClusterctlError, InvalidInputError

DEFAULT_PATH = "cluster.yaml"

STARTER = """\
# A clusterctl inventory: which machines run the Dask scheduler and the workers.
#
#   clusterctl check cluster.yaml    every host reachable, python and versions right, port free
#   clusterctl up cluster.yaml       start it; `clusterctl status`, `clusterctl logs`, `clusterctl down`
#
# As written it runs everything on this machine. Editors can check this file as you type:
# `clusterctl schema > cluster.schema.json` (README.md, "clusterctl schema", shows the editor settings).

# The cluster's name: local state and `--cluster NAME` use it.
name: mycluster

# Settings every host inherits; any key of a host below may be set here.
defaults:
  # python: python3              # with dask and distributed, same versions on every host; default:
  #                              # python3 on ssh hosts, clusterctl's own interpreter on local ones
  env:                           # environment of every process, passed literally
    OMP_NUM_THREADS: "1"
  # setup:                       # shell lines run before each process, e.g. to activate an environment
  #   - source ~/venvs/dask/bin/activate
  # user: alice                  # ssh login (default: your ssh config, then your user name)
  # identity_file: ~/.ssh/id_ed25519
  # host_key_policy: accept-new  # or strict: only host keys already in known_hosts

# The machines, by alias. `connection: local` is this machine; otherwise clusterctl uses ssh
# and honours ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump).
hosts:
  me:
    connection: local
  # node1:
  #   address: 10.0.0.11         # where clusterctl connects, and where workers find the scheduler
  #   port: 22
  #   python: /opt/conda/bin/python

scheduler:
  host: me
  port: 8786
  dashboard_address: ":8787"     # null turns the dashboard off

# One entry per `dask worker` invocation: nworkers processes of nthreads threads each.
workers:
  - name: cpu                    # its workers are cpu-0 and cpu-1 (just `cpu` when nworkers is 1)
    host: me
    nworkers: 2
    nthreads: 1
    memory_limit: 2GB            # per process: a size, a fraction like 0.5, auto, or 0 for no limit
  # - name: gpu
  #   host: node1
  #   nworkers: 1
  #   resources: {GPU: 1}        # tasks ask for it: client.submit(f, resources={"GPU": 1})
"""


@dataclass(frozen=True)
class InitResult:
    path: str  # "-" when written to stdout
    text: str
    overwrote: bool = False


def init(path: str = DEFAULT_PATH, force: bool = False) -> InitResult:
    """Write the starter inventory to ``path`` (``-``: return it for stdout); never overwrite unasked."""
    if path == "-":
        return InitResult("-", STARTER)
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{path} is a directory", f"give a file name, e.g. {target / DEFAULT_PATH}")
    existed = target.exists()
    try:
        # "x" refuses an existing file atomically, even one created a moment ago.
        with open(target, "w" if force else "x", encoding="utf-8") as handle:
            handle.write(STARTER)
    except FileExistsError:
        raise InvalidInputError(f"{path} already exists; not overwriting it",
                                "pass --force to replace it, or give another PATH") from None
    except FileNotFoundError:
        raise InvalidInputError(f"cannot write {path}: directory {target.parent} does not exist",
                                "create the directory first, or give another PATH") from None
    except OSError as exc:
        raise ClusterctlError(f"cannot write {path}: {exc.strerror}") from None
    return InitResult(os.fspath(target), STARTER, overwrote=existed)
