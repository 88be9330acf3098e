"""``python -m testbed up --hosts N [--dir DIR]`` / ``down [--dir DIR]`` / ``prune``: a bed that outlives
the command, for trying clusterctl by hand (``make testbed``), and its removal."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from testbed.build import create_testbed
from testbed.errors import TestbedError
from testbed.model import STATE_FILE, Testbed
from testbed.registry import prune_stale_beds

DEFAULT_HOSTS = 4
DEFAULT_DIR = Path("/tmp/clusterctl-testbed")
INVENTORY_FILE = "inventory.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=(
        "A multi-host test bed on one machine: N network namespaces on a private bridge, each running its own sshd."))
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a bed that outlives this command")
    up.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="number of hosts (default %(default)s)")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the bed lives (default %(default)s)")
    down = commands.add_parser("down", help="remove the bed recorded in DIR")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="(default %(default)s)")
    commands.add_parser("prune", help="remove beds whose owning test run died")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up_command(args.hosts, args.dir)
        if args.command == "down":
            return down_command(args.dir)
        return prune_command()
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def up_command(hosts: int, directory: Path) -> int:
    state = directory / STATE_FILE
    if state.exists():
        existing = Testbed.load(state)
        if existing.exists():
            raise TestbedError(f"a test bed ({existing.network}) is already up in {directory}; "
                               f"run `python -m testbed down --dir {directory}` first")
        existing.destroy()  # only its records are left
    started = time.monotonic()
    bed = create_testbed(hosts, directory)
    inventory_path = bed.workdir / INVENTORY_FILE
    inventory = bed.default_inventory()
    inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    print(yaml.safe_dump(inventory, sort_keys=False), end="")
    print(f"# {hosts} host(s) on {bed.network} in {time.monotonic() - started:.1f}s; state: {bed.state_path}")
    print(f"# inventory: {inventory_path}")
    return 0


def down_command(directory: Path) -> int:
    state = directory / STATE_FILE
    if not state.exists():
        print(f"no test bed recorded in {directory} (nothing to do)")
        return 0
    bed = Testbed.load(state)
    bed.destroy()
    print(f"test bed {bed.network} removed")
    return 0


def prune_command() -> int:
    pruned = prune_stale_beds()
    print(f"removed {len(pruned)} stale test bed(s){': ' + ', '.join(pruned) if pruned else ''}")
    return 0
