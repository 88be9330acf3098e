"""A multi-host test bed on one machine: N network namespaces on a private bridge, each running its own sshd.

Layout of a bed with id ``ab12`` on subnet ``10.213.K.0/24``::

    root namespace:  bridge cctlbrab12 (10.213.K.1/24)
                       |-- veth cctlab12h1 <-> eth0 in namespace cctl-ab12-h1 (10.213.K.11/24), sshd on :22
                       |-- veth cctlab12h2 <-> eth0 in namespace cctl-ab12-h2 (10.213.K.12/24), sshd on :22
                       ...

The hosts reach each other and the bridge address, nothing else: no default route, no NAT, no forwarding.
They share the machine's filesystem, so every host gets its own ``run_dir``.

Three ways in:

- the tests' session fixture ``testbed`` (tests/helpers/fixtures.py; skipped without root, ``ip netns`` or sshd);
- ``create_testbed(n, workdir)`` / ``Testbed.destroy()`` (the benchmarks);
- ``python -m testbed up --hosts N [--dir DIR]`` / ``down [--dir DIR]`` / ``prune``.

Every bed records itself in ``<workdir>/testbed.json`` and in a registry under ``/run`` as it is built, so a
bed whose owner died without cleaning up (SIGKILL, a hard timeout) is removed by ``prune`` -- the fixture
prunes at the start of each session. Processes are only ever found, and killed, by their network namespace.

Where things are: model.py (what a bed is, its records and inventories), build.py (building and owning one),
netns.py (``ip``: bridge, namespaces, cables; processes by namespace), registry.py (the records under /run,
prune), sshd.py (starting sshd), proc.py (reading /proc), client_env.py (an isolated environment for a
clusterctl client), cli.py (``python -m testbed``).
"""

from testbed.build import create_testbed, destroyed_at_exit, unavailable_reason
from testbed.errors import TestbedError, TestbedUnavailableError
from testbed.model import BedHost, Testbed
from testbed.registry import prune_stale_beds, registered_beds

__all__ = [
    "BedHost",
    "Testbed",
    "TestbedError",
    "TestbedUnavailableError",
    "create_testbed",
    "destroyed_at_exit",
    "prune_stale_beds",
    "registered_beds",
    "unavailable_reason",
]
