"""Run a command while every core is kept busy: ``python -m tests.helpers.loaded CMD ARGS...``.

Users' machines are busy, and the tests must not depend on an idle one (`make test-loaded`). The
CPU hogs are started here and stopped by their pids when the command ends, however it ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.helpers.loaded CMD [ARGS...]", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            for _ in range(cores)]
    print(f"loaded: {cores} CPU hog(s), pids {' '.join(str(h.pid) for h in hogs)}", file=sys.stderr, flush=True)
    try:
        return subprocess.call(argv)
    finally:
        for hog in hogs:
            hog.send_signal(signal.SIGKILL)
            hog.wait()
        print(f"loaded: stopped pids {' '.join(str(h.pid) for h in hogs)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
