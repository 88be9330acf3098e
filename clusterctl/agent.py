"""The host side of clusterctl: a stdlib-only script run by the host's own python.

clusterctl never types process management into a remote shell. It runs this file's source as
``python -c SOURCE REQUEST_JSON`` through any transport (local or SSH) and reads one JSON line
back. That keeps one code path for every host, needs nothing installed there but python, and
passes argv and environment values as data, never through a shell.

Processes are started in their own session, so the process group id equals the pid we record
and a whole ``dask worker`` tree (nanny and worker children) is signalled at once. A recorded
pid is only trusted while the process holding it has the start time we recorded, so a pid the
kernel has reused for something else is never signalled.

Keep this file compatible with Python 3.8 and free of third-party imports.
"""

import json
import os
import signal
import subprocess
import sys
import time

PID_SUFFIX = ".pid"


def _start_time(pid):
    """The process's start time in clock ticks since boot, or None where /proc is absent."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _leader_is_ours(pid, start_time):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds this pid
    return start_time is None or _start_time(pid) in (None, start_time)


def _group_alive(pid):
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _alive(pid, start_time):
    """Ours and running: the leader with its recorded start time, or what is left of its group.

    A process group id is never reused while any member lives, so surviving children of a dead
    leader are still ours. A live leader with another start time is a stranger reusing the pid.
    """
    if _leader_is_ours(pid, start_time):
        return True
    try:
        os.kill(pid, 0)
        return False  # the pid is held by a stranger (leader gone, pid reused)
    except OSError:
        pass
    return _group_alive(pid)


def _reap_children():
    # When the agent itself started a process (local tests that start and stop in one agent
    # call are rare, but possible), reap it so it does not linger as a zombie.
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def start(request):
    run_dir = os.path.expanduser(request["run_dir"])
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    started = []
    for spec in request["processes"]:
        log_path = os.path.join(run_dir, spec["name"] + ".log")
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        argv = spec["argv"]
        if spec.get("setup"):
            # The user's own shell lines, then exec the argv given as "$@": no quoting needed.
            argv = ["/bin/sh", "-c", "\n".join(spec["setup"]) + '\nexec "$@"', spec["name"], *argv]
        with open(log_path, "ab") as log:
            os.chmod(log_path, 0o600)
            log.write(("--- clusterctl: starting %s at %s\n" % (spec["name"], time.strftime("%Y-%m-%dT%H:%M:%S"))).encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=run_dir,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                started.append({"name": spec["name"], "error": "cannot run %s: %s" % (argv[0], exc.strerror), "log": log_path})
                continue
        record = {"name": spec["name"], "pid": process.pid, "start_time": _start_time(process.pid), "log": log_path}
        pid_path = os.path.join(run_dir, spec["name"] + PID_SUFFIX)
        with open(pid_path + ".tmp", "w") as handle:
            json.dump(dict(record, role=spec.get("role"), worker_names=spec.get("worker_names", [])), handle)
        os.replace(pid_path + ".tmp", pid_path)
        started.append(record)
    return {"processes": started}


def alive(request):
    return {"processes": [dict(p, alive=_alive(p["pid"], p.get("start_time"))) for p in request["processes"]]}


def stop(request):
    grace = float(request.get("grace", 10))
    targets = [p for p in request["processes"] if _alive(p["pid"], p.get("start_time"))]
    for p in targets:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p["pid"], p.get("start_time")) for p in targets):
        _reap_children()
        time.sleep(0.1)
    for p in targets:
        if _alive(p["pid"], p.get("start_time")):
            _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p["pid"], p.get("start_time")) for p in targets):
        _reap_children()
        time.sleep(0.05)
    result = []
    for p in request["processes"]:
        gone = not _alive(p["pid"], p.get("start_time"))
        if gone and p.get("pid_file"):
            try:
                os.unlink(os.path.expanduser(p["pid_file"]))
            except FileNotFoundError:
                pass
        result.append(dict(p, gone=gone, signalled=p in targets))
    return {"processes": result}


def _signal(process, signum):
    # Signal the whole session's process group; fall back to the leader alone.
    try:
        os.killpg(process["pid"], signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(process["pid"], signum)
        except OSError:
            pass


def listing(request):
    """Every pid file in the run directory, with liveness: what runs here without local state."""
    run_dir = os.path.expanduser(request["run_dir"])
    found = []
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        if not name.endswith(PID_SUFFIX):
            continue
        path = os.path.join(run_dir, name)
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        record["pid_file"] = path
        record["alive"] = _alive(record["pid"], record.get("start_time"))
        found.append(record)
    return {"processes": found}


def versions(request):
    import platform

    found = {"python": platform.python_version(), "executable": sys.executable}
    for module in ("dask", "distributed", "cloudpickle", "msgpack"):
        try:
            imported = __import__(module)
            found[module] = getattr(imported, "__version__", None) or ".".join(map(str, getattr(imported, "version", ())))
        except Exception as exc:
            found[module] = None
            found.setdefault("errors", {})[module] = "%s: %s" % (type(exc).__name__, exc)
    return found


def tail(request):
    lines = int(request.get("lines", 20))
    try:
        with open(os.path.expanduser(request["path"]), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return {"text": "", "error": exc.strerror}
    return {"text": "\n".join(text.splitlines()[-lines:])}


def cleanup(request):
    """Remove the run directory's pid files and, when asked, the directory itself if empty."""
    run_dir = os.path.expanduser(request["run_dir"])
    removed = []
    for name in request.get("files", []):
        try:
            os.unlink(os.path.join(run_dir, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return {"removed": removed}


OPERATIONS = {
    "start": start,
    "alive": alive,
    "stop": stop,
    "list": listing,
    "versions": versions,
    "tail": tail,
    "cleanup": cleanup,
}


def main(argv):
    request = json.loads(argv[1])
    answer = OPERATIONS[request["op"]](request)
    sys.stdout.write("CLUSTERCTL-AGENT " + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main(sys.argv)
