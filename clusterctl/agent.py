"""The host side of clusterctl: a stdlib-only script run by the host's own python.

clusterctl never types process management into a remote shell. It runs this file's source as
``python -c SOURCE`` through any transport (local or SSH), writes a JSON request (one line) to its
stdin, and reads one JSON line back; a request with ``hold`` keeps the agent for one more request on
the same stdin (`up`'s check, then its start). That keeps one code path for every host, needs nothing
installed there but python, and passes argv and environment values as data, never through a shell.

Processes are started in their own session, so the process group id equals the pid we record
and a whole ``dask worker`` tree (nanny and worker children) is signalled at once. A recorded
pid is only trusted while the process holding it has the start time we recorded, so a pid the
kernel has reused for something else is never signalled.

Keep this file compatible with Python 3.8 and free of third-party imports.
"""

import errno
import json
import os
import select
import signal
import socket
import stat as stat_module
import subprocess
import sys
import time

PID_SUFFIX = ".pid"
ANSWER_MARKER = "CLUSTERCTL-AGENT "
EXIT_MARKER = "CLUSTERCTL-EXIT "  # a watched process exited (``start_watched``)
# `elsewhere-<address>` in the scheduler host's run directory: add-worker put a worker on a host that
# is not in the inventory; a `down CONFIG` without local state visits it through this file.
ELSEWHERE_PREFIX = "elsewhere-"
# What a process inherits from this agent's own environment: everything but clusterctl's own
# variables (CLUSTERCTL_SSH_PASSWORD above all), which only the controller may read.
OWN_PREFIX = "CLUSTERCTL_"


class Refused(Exception):
    """A request this host refuses, e.g. a run directory someone else can write to: one message
    (naming what and why) and a hint, sent back as the answer for the controller to report."""

    def __init__(self, message, hint):
        Exception.__init__(self, message)
        self.message, self.hint = message, hint


def trusted_run_dir(run_dir, create=True):
    """The run directory, made if missing, once it and its parents up to the home are safe.

    Another user who can write to it (or to a parent) could plant symlinks and pid files there,
    and turn our writes and signals against files and processes of their choosing. So every
    directory on the way must be owned by us (or by root, for the parents), and writable by
    nobody else: a sticky parent such as /tmp is fine, since others cannot rename what we own.
    """
    run_dir = os.path.abspath(os.path.expanduser(run_dir))
    if create:
        try:
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise Refused("cannot create run directory %s: %s" % (run_dir, exc.strerror),
                          "check `run_dir:` for this host") from None
    uid = os.geteuid()
    home = os.path.realpath(os.path.expanduser("~"))
    path = run_dir
    while True:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        if info is not None:
            _check_directory(path, info, uid, leaf=path == run_dir)
        parent = os.path.dirname(path)
        if parent == path or path == home:
            break
        path = parent
    return run_dir


def _check_directory(path, info, uid, leaf):
    fix = "choose a `run_dir:` inside your home, or remove %s and let clusterctl create it" % path
    if stat_module.S_ISLNK(info.st_mode):
        if info.st_uid not in (uid, 0):
            raise Refused("run directory path %s is a symlink owned by uid %d, not by you (uid %d)"
                          % (path, info.st_uid, uid), fix)
        info = os.stat(path)
    if (leaf and info.st_uid != uid) or info.st_uid not in (uid, 0):
        raise Refused("run directory %s%s is owned by uid %d, not by you (uid %d)"
                      % ("" if leaf else "parent ", path, info.st_uid, uid), fix)
    writable = info.st_mode & 0o022
    if writable and (leaf or not info.st_mode & stat_module.S_ISVTX):
        raise Refused("run directory %s%s is writable by %s (mode %04o)"
                      % ("" if leaf else "parent ", path, "group and others" if writable == 0o022
                         else "its group" if writable == 0o020 else "others", stat_module.S_IMODE(info.st_mode)),
                      "if only you ever wrote to it, `chmod go-w %s`; else %s" % (path, fix))


def _pid(value):
    """A pid worth signalling: an int above 1 (0 and negatives name process groups, 1 is init)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else None


def _open_private(path, flags):
    """Open a file of ours for writing, never through a symlink; mode 0600 set on the descriptor."""
    fd = os.open(path, flags | os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "not a regular file of ours")
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def _stat(pid):
    """(state, process group, start time) from /proc, or None where /proc has no such process."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _start_time(pid):
    stat = _stat(pid)
    return stat[2] if stat else None


def _exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid):
    """Some process of the group still runs. Zombies do not count: they run nothing, and where
    nobody reaps them (a container's init may not) they would look alive forever."""
    if not os.path.isdir("/proc/self"):
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                return True
    return False


def _alive(pid, start_time):
    """Ours and running: the session we started, leader or what is left of its group.

    A process group id is never reused while any member lives, so surviving children of a dead
    leader are still ours. A live process with another start time holds a reused pid: a stranger.
    """
    if _pid(pid) is None:
        return False
    stat = _stat(pid)
    if stat is not None and stat[2] != start_time:  # no start time recorded: nothing proves it ours
        return False
    if stat is not None and stat[1] == pid and stat[0] != "Z":
        return True  # the leader itself runs in its group: no need to scan /proc for the rest of it
    if stat is None and not os.path.isdir("/proc/self"):
        return _exists(pid) or _group_alive(pid)
    return _group_alive(pid)


def log_path(run_dir, name):
    return os.path.join(run_dir, name + ".log")


def launch_argv(spec):
    """The argv ``start`` executes for one process request (also what `up --dry-run` shows).

    The user's own setup lines run first in a shell that then execs the argv given as "$@": no
    quoting needed. `set -e`: a failing setup line stops the start instead of running dask half set up.
    """
    argv = list(spec["argv"])
    if spec.get("setup"):
        argv = ["/bin/sh", "-c", "set -e\n" + "\n".join(spec["setup"]) + '\nexec "$@"', spec["name"], *argv]
    return argv


def process_env(spec):
    """The environment a process starts with: this host's own, minus clusterctl's, plus the inventory's ``env``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(OWN_PREFIX)}
    env.update(spec.get("env") or {})
    return env


def start(request, children=None):
    """Start every process of the request, detached; with ``children`` (a list), append (record,
    Popen) for each, so that ``watch`` can report the exit of any of them."""
    run_dir = trusted_run_dir(request["run_dir"])
    started = []
    children = [] if children is None else children
    for spec in request["processes"]:
        path = log_path(run_dir, spec["name"])
        env = process_env(spec)
        argv = launch_argv(spec)
        try:
            fd = _open_private(path, os.O_APPEND)
        except OSError as exc:
            started.append({"name": spec["name"], "error": "cannot open its log %s: %s" % (path, exc.strerror), "log": path})
            continue
        with os.fdopen(fd, "ab") as log:
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
                started.append({"name": spec["name"], "error": "cannot run %s: %s" % (argv[0], exc.strerror), "log": path})
                continue
        record = {"name": spec["name"], "pid": process.pid, "start_time": _start_time(process.pid), "log": path}
        children.append((record, process))
        pid_path = os.path.join(run_dir, spec["name"] + PID_SUFFIX)
        try:
            os.unlink(pid_path + ".tmp")  # left by an interrupted start; never written through
        except FileNotFoundError:
            pass
        with os.fdopen(_open_private(pid_path + ".tmp", os.O_EXCL), "w") as handle:
            json.dump(dict(record, role=spec.get("role"), worker_names=spec.get("worker_names", [])), handle)
        os.replace(pid_path + ".tmp", pid_path)
        started.append(record)
    return {"processes": started}


def start_watched(request):
    """``start``, answered at once; then this agent stays attached and reports, on the same stream,
    each started process that exits (with its log's tail), until the controller closes the stream
    (it is done waiting) or ``watch_seconds`` pass. It sleeps until a child exits: waiting costs nothing."""
    children = []  # type: list
    answer = start(request, children)
    _answer(answer)
    watch(children, float(request["watch_seconds"]), int(request.get("tail_lines", 200)), request.get("held"))


def watch(children, seconds, tail_lines, input_open=False):
    deadline = time.monotonic() + seconds
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so that the wakeup fd is written
    # The request came with its end of input; the controller's end shows as an error on our stdout.
    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)  # no events asked: POLLERR/POLLHUP come anyway
    poller.register(wake_read, select.POLLIN)
    if input_open:  # a held agent's input is still open: its end is the controller's, at once
        poller.register(sys.stdin.fileno(), select.POLLIN)
    pending = list(children)
    while pending:
        for record, process in list(pending):
            if process.poll() is not None:  # reaps it: an exited child of ours is no zombie
                pending.remove((record, process))
                text = tail({"path": record["log"], "lines": tail_lines}).get("text", "")
                _answer(dict(record, exited=process.returncode, tail=text), marker=EXIT_MARKER)
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            break
        events = dict(poller.poll(remaining * 1000))
        if events.get(wake_read):
            os.read(wake_read, 4096)
        if events.get(sys.stdout.fileno()) or (input_open and events.get(sys.stdin.fileno())):
            break  # the controller closed the stream: it watches no more


def _answer(answer, marker=None):
    sys.stdout.write((marker or ANSWER_MARKER) + json.dumps(answer) + "\n")
    sys.stdout.flush()


def alive(request):
    return {"processes": [dict(p, alive=_alive(p["pid"], p.get("start_time"))) for p in request["processes"]]}


def stop(request):
    """SIGTERM each process group, SIGKILL what is left after the grace period, verify.

    With ``run_dir``, every live process that a pid file there names is stopped too: what a
    failed or interrupted start left behind is found even when nobody recorded its pid.
    """
    grace = float(request.get("grace", 10))
    processes = list(request["processes"])
    if request.get("run_dir"):
        known = {p["pid"] for p in processes}
        processes += [p for p in listing(request)["processes"] if p["pid"] not in known]
    targets = [p for p in processes if _alive(p["pid"], p.get("start_time"))]
    for p in targets:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p["pid"], p.get("start_time")) for p in targets):
        time.sleep(0.02)  # a few /proc reads: `down` answers as soon as the last one is gone
    for p in targets:
        if _alive(p["pid"], p.get("start_time")):
            _signal(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p["pid"], p.get("start_time")) for p in targets):
        time.sleep(0.05)
    result = []
    for p in processes:
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
    if _pid(process["pid"]) is None:  # killpg(0) would signal this agent's own group
        return
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
    """Every pid file in the run directory, with liveness: what runs here without local state.

    A pid file is believed only if we own it, it is the record of the process its file is named
    after, and it names a real pid (an int above 1) with its start time.
    """
    run_dir = os.path.abspath(os.path.expanduser(request["run_dir"]))
    if not os.path.lexists(run_dir):
        return {"processes": [], "elsewhere": []}
    trusted_run_dir(run_dir, create=False)
    found = []
    elsewhere = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith(ELSEWHERE_PREFIX) and _pid_record(os.path.join(run_dir, name)) == {}:
            elsewhere.append(name[len(ELSEWHERE_PREFIX):])
        if not name.endswith(PID_SUFFIX):
            continue
        path = os.path.join(run_dir, name)
        record = _pid_record(path)
        if (not isinstance(record, dict) or record.get("name") != name[: -len(PID_SUFFIX)] or _pid(record.get("pid")) is None
                or not isinstance(record.get("start_time"), int)):
            continue
        record["pid_file"] = path
        record["alive"] = _alive(record["pid"], record["start_time"])
        found.append(record)
    return {"processes": found, "elsewhere": elsewhere}


def _pid_record(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd) as handle:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_size > 1024 * 1024:
            return None
        try:
            return json.load(handle)
        except (ValueError, RecursionError):
            return None


# What `Client.get_versions(check=True)` compares (distributed.versions), in its order.
FINGERPRINT = ("dask", "distributed", "msgpack", "cloudpickle", "toolz", "tornado", "lz4", "numpy", "pandas")


def versions(request):
    """Versions from the installed distributions' metadata, as distributed itself reads them: no
    package is imported, so the answer costs a few milliseconds. dask and distributed must also be
    findable as modules (a spec lookup, not an import)."""
    import importlib.util
    import platform

    # `check`: the port bound first, so that the worker hosts, asked at the same moment, can reach it.
    bound = _bind(request["serve"]) if request.get("serve") else None
    found = {"python": platform.python_version(), "executable": sys.executable, "host": _platform()}  # type: dict
    names = FINGERPRINT + tuple(request.get("packages") or ())
    try:
        found.update(installed_versions(names))
    except Exception as exc:  # noqa: BLE001 - unreadable metadata is a finding to report
        found.update(dict.fromkeys(names))
        found["errors"] = dict.fromkeys(names, "%s: %s" % (type(exc).__name__, exc))
    for module in ("dask", "distributed"):
        if module in found.get("errors", {}):
            continue
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            spec, why = None, "%s: %s" % (type(exc).__name__, exc)
        else:
            why = "ModuleNotFoundError: No module named %r" % module
        if spec is None or found[module] is None:
            found.setdefault("errors", {})[module] = why
    if request.get("free_port"):  # `up`: is the scheduler's port free? (asked here to save a round trip)
        found["free_port"] = listen(dict(request["free_port"], seconds=0))
    if request.get("reach"):  # `check` on a worker host: the scheduler's port, retried while refused
        found["reach"] = connect(dict(request["reach"], retry_refused=True))
    if bound is not None:  # `check` on the scheduler host: served here until every worker host connected
        sock, error = bound
        found["serve"] = error if sock is None else {
            "listening": True, "accepted": _accept_until(sock, time.monotonic() + float(request["serve"]["seconds"]),
                                                         request["serve"].get("accepts"))}
    if request.get("gpus") is not None:  # asked in the same round trip: a fleet's preflight stays one call per host
        found.update(gpus(request["gpus"]))
    return found


def installed_versions(names):
    """Name -> version (None: not installed) of each distribution in ``names``, found as
    importlib.metadata finds it: the first ``*.dist-info`` or ``*.egg-info`` directory (or egg's
    EGG-INFO) of that normalized name along sys.path, its version read from its METADATA/PKG-INFO.
    Without importing importlib.metadata (email, zipfile, pathlib...): that import alone cost more
    than every other part of this answer."""
    import re

    def normalized(name):
        return re.sub(r"[-_.]+", "_", name).lower()

    wanted = {}  # type: dict
    for name in names:
        wanted.setdefault(normalized(name), []).append(name)
    found = {}
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except OSError:  # not a directory (a zip), or gone
            continue
        folders = []
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                folders.append((low.rpartition(".")[0].partition("-")[0], os.path.join(entry or ".", child)))
            elif low == "egg-info" and entry.lower().endswith(".egg"):  # an egg on sys.path itself
                folders.append((os.path.basename(entry).rpartition(".")[0].partition("-")[0],
                                os.path.join(entry, child)))
        for base, folder in folders:
            key = normalized(base)
            if key in wanted and key not in found:
                version = _metadata_version(folder)
                if version is not None:
                    found[key] = version
    return {name: found.get(normalized(name)) for name in names}


def _metadata_version(folder):
    """The ``Version:`` header of a dist-info's METADATA (an egg-info's PKG-INFO, or the egg-info
    file itself, as distributions' own packages have them), else None."""
    files = [folder] if os.path.isfile(folder) else [os.path.join(folder, leaf) for leaf in ("METADATA", "PKG-INFO")]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        return None  # the headers ended
                    key, _, value = line.partition(":")
                    if key.strip().lower() == "version":
                        return value.strip()
        except OSError:
            continue
    return None


GPU_QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
GPU_TIMEOUT = 30


def gpus(probe):
    """The GPUs ``nvidia-smi`` lists, run with a worker group's env and setup (a PATH set there counts):
    ``{"gpus": [{index, uuid, name, memory_mib}]}``, or ``{"gpu_error": why}``."""
    spec = {"name": "clusterctl-gpus", "argv": GPU_QUERY, "env": probe.get("env"), "setup": probe.get("setup")}
    try:
        result = subprocess.run(launch_argv(spec), stdin=subprocess.DEVNULL, capture_output=True,
                                env=process_env(spec), timeout=GPU_TIMEOUT)
    except FileNotFoundError:
        return {"gpu_error": "nvidia-smi: command not found"}
    except subprocess.TimeoutExpired:
        return {"gpu_error": "nvidia-smi did not answer within %d s" % GPU_TIMEOUT}
    except OSError as exc:
        return {"gpu_error": "cannot run nvidia-smi: %s" % exc.strerror}
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        lines = (result.stderr.decode("utf-8", "replace") + output).strip().splitlines() or ["no output"]
        if result.returncode == 127:
            return {"gpu_error": "nvidia-smi: command not found"}
        return {"gpu_error": "nvidia-smi failed (exit %d): %s" % (result.returncode, lines[-1][:200])}
    found = []
    for line in output.strip().splitlines():
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 4 or not fields[0].isdigit():
            return {"gpu_error": "nvidia-smi printed an unexpected line: %r" % line[:200]}
        memory = int(fields[3]) if fields[3].isdigit() else None  # "[N/A]" on some boards
        found.append({"index": int(fields[0]), "uuid": fields[1], "name": fields[2], "memory_mib": memory})
    if not found:
        return {"gpu_error": "nvidia-smi lists no GPU"}
    return {"gpus": found}


def _platform():
    """What a wheel must be built for to run here: interpreter, ABI and platform tags' ingredients."""
    import sysconfig

    try:  # cheaper than platform.libc_ver(), which reads the interpreter's binary
        libc, libc_version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
    except (AttributeError, ValueError, OSError):
        libc, libc_version = "", ""
    return {
        "implementation": sys.implementation.name,
        "python": "%d.%d" % sys.version_info[:2],
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "platform": sysconfig.get_platform(),
        "libc": libc,
        "libc_version": libc_version,
    }


def prepare(request):
    """Make the run directory and its tls/ directory, private to the user."""
    run_dir = trusted_run_dir(request["run_dir"])
    tls_dir = os.path.join(run_dir, "tls")
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    for directory in (run_dir, tls_dir):
        os.chmod(directory, 0o700)
    trusted_run_dir(tls_dir, create=False)
    return {"run_dir": run_dir}


def expand(request):
    """A path as an absolute path on this host: `~` resolved here, where it means something."""
    return {"path": os.path.abspath(os.path.expanduser(request["path"]))}


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


def read(request):
    """Pieces of log files, for `clusterctl logs`: the last ``lines`` lines of each file, or, given
    the ``offset`` a previous call returned, what was appended since.

    With ``whole_lines`` the answer stops after the last newline, so a line a process is still
    writing is sent once, complete, by a later call. A file that shrank or was replaced (another
    inode) is read again from its start, and the answer says so with ``restarted``.
    """
    max_bytes = int(request.get("max_bytes", 1024 * 1024))
    return {"files": [_read_one(item, max_bytes) for item in request["files"]]}


def _read_one(item, max_bytes):
    offset = item.get("offset")
    try:
        with open(os.path.expanduser(item["path"]), "rb") as handle:
            info = os.fstat(handle.fileno())
            restarted = offset is not None and (offset > info.st_size or item.get("inode") not in (None, info.st_ino))
            start = offset if offset is not None and not restarted else 0
            if offset is None:  # the last lines: they are within the last max_bytes
                start = max(0, info.st_size - max_bytes)
            handle.seek(start)
            data = handle.read(max(0, min(info.st_size - start, max_bytes)))
    except OSError as exc:
        return {"error": exc.strerror or str(exc), "offset": offset, "inode": item.get("inode")}
    more = len(data) >= max_bytes  # the caller may ask again at once
    if item.get("whole_lines"):
        cut = data.rfind(b"\n") + 1
        if cut or not more:  # a line longer than max_bytes is sent in pieces
            data = data[:cut]
    end = start + len(data)
    if offset is None:
        lines = data.splitlines(True)
        if start > 0 and lines:
            lines = lines[1:]  # we began reading in the middle of this line
        count = int(item.get("lines") or 0)
        data = b"".join(lines[-count:]) if count > 0 else b""
    return {"text": data.decode("utf-8", "replace"), "offset": end, "inode": info.st_ino, "restarted": restarted,
            "more": more}


def listen(request):
    """Hold a TCP port open for a little while, in the background, for `clusterctl check`.

    Binding here proves the port is free; the listener then lets other hosts prove they can
    reach it. It runs in its own session with no link to this agent's output, so the transport
    returns at once, and it exits by itself after ``seconds``; clusterctl stops it earlier with
    the ``stop`` operation, by the pid and start time returned here.
    """
    sock, error = _bind(request)
    if sock is None:
        return error
    address = sock.getsockname()
    if float(request.get("seconds", 30)) <= 0:  # only "is it free?" (`up`): no listener left behind
        sock.close()
        return {"listening": True}
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the listener
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            _accept_until(sock, time.monotonic() + float(request.get("seconds", 30)))
        finally:
            os._exit(0)
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until it leads its own session, so `stop` finds its group
        stat = _stat(pid)
        if stat is None or stat[1] == pid:
            break
        time.sleep(0.005)
    return {"listening": True, "pid": pid, "start_time": _start_time(pid), "address": list(address[:2])}


def _bind(request):
    """(a listening socket on ``host``:``port``, None), or (None, why not: ``error``, ``in_use``)."""
    host, port = request.get("host") or None, int(request["port"])
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return None, {"listening": False, "error": "cannot resolve %s: %s" % (host, exc.strerror)}
    sock = socket.socket(family, kind, proto)
    try:
        # As dask's own listener does: a connection still in TIME_WAIT does not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        return None, {"listening": False, "error": exc.strerror or str(exc), "in_use": exc.errno == errno.EADDRINUSE}
    return sock, None


def _accept_until(sock, deadline, accepts=None):
    """Accept (and close) connections until ``deadline``, or until ``accepts`` of them came; then close
    the socket. How many came."""
    accepted = 0
    while accepts is None or accepted < accepts:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            connection = sock.accept()[0]
        except OSError:  # includes the timeout
            break
        connection.close()
        accepted += 1
    sock.close()
    return accepted


def connect(request):
    """Open (and close) a TCP connection from this host: can it reach ``host:port``? With
    ``retry_refused``, a refused connection is tried again until ``timeout`` (its listener, asked at
    the same moment on another host, may not be bound yet)."""
    started = time.monotonic()
    deadline = started + float(request.get("timeout", 5))
    while True:
        try:
            socket.create_connection((request["host"], int(request["port"])),
                                     timeout=max(0.05, deadline - time.monotonic())).close()
        except socket.gaierror as exc:
            return {"connected": False, "error": "cannot resolve %s: %s" % (request["host"], exc.strerror)}
        except ConnectionRefusedError as exc:
            if request.get("retry_refused") and time.monotonic() + 0.05 < deadline:
                time.sleep(0.05)
                continue
            return {"connected": False, "error": exc.strerror or str(exc)}
        except OSError as exc:
            return {"connected": False, "error": exc.strerror or str(exc) or type(exc).__name__}
        return {"connected": True, "seconds": round(time.monotonic() - started, 3)}


def _sync_paths(request):
    run_dir = os.path.expanduser(request["run_dir"])
    venv = os.path.join(run_dir, "venv")
    return run_dir, os.path.join(run_dir, "wheels"), venv, os.path.join(venv, "bin", "python")


SYNC_MANIFEST = "clusterctl-sync.json"


def sync_prepare(request):
    """What this host has for `clusterctl sync`: its platform, the wheels shipped before (by the
    sha256 verified when they arrived), and what its venv was last made from. Makes the wheel directory
    unless ``create`` is false."""
    import importlib.util
    import platform

    run_dir, wheels, venv, python = _sync_paths(request)
    if request.get("create", True):  # `check` only looks
        for directory in (run_dir, wheels):
            os.makedirs(directory, mode=0o700, exist_ok=True)
    found = {}
    for name in (os.listdir(wheels) if os.path.isdir(wheels) else []):
        if name.endswith(".whl"):
            try:
                with open(os.path.join(wheels, name + ".sha256")) as handle:
                    found[name] = handle.read().strip()
            except OSError:
                pass
    try:
        with open(os.path.join(venv, SYNC_MANIFEST)) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        manifest = None
    return {"host": _platform(), "python": platform.python_version(), "executable": sys.executable,
            "can_venv": importlib.util.find_spec("venv") is not None, "wheels_dir": wheels, "wheels": found,
            "venv": venv, "venv_python": python, "venv_ready": os.access(python, os.X_OK), "manifest": manifest}


def _sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tail(text, lines=5):
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "no output"


def sync_install(request):
    """Check the shipped wheels, make the venv if needed, and install exactly the requirements into
    it with pip run from its own wheel, offline; distributions no longer required are removed."""
    _, wheels, venv, python = _sync_paths(request)
    for name, expected in sorted(request["wheels"].items()):
        path = os.path.join(wheels, name)
        try:
            actual = _sha256(path)
        except OSError as exc:
            return {"ok": False, "stage": "transfer", "error": "%s: %s" % (name, exc.strerror)}
        if actual != expected:
            return {"ok": False, "stage": "transfer", "error": "%s arrived damaged (sha256 %s)" % (name, actual)}
        with open(path + ".sha256", "w") as handle:
            handle.write(actual)
    if not os.access(python, os.X_OK):
        made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if made.returncode != 0 or not os.access(python, os.X_OK):
            return {"ok": False, "stage": "venv", "error": _tail(made.stdout, 2)}
    try:
        with open(os.path.join(venv, SYNC_MANIFEST)) as handle:
            before = json.load(handle).get("requirements") or []
    except (OSError, ValueError):
        before = []
    pip = [python, os.path.join(wheels, request["installer"], "pip"), "--disable-pip-version-check", "--no-input"]
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1")
    names = {_canonical(r.split("==")[0]) for r in request["requirements"]}
    removed = [r.split("==")[0] for r in before if _canonical(r.split("==")[0]) not in names]
    if removed:
        subprocess.run([*pip, "uninstall", "-y", "-q", *removed], stdin=subprocess.DEVNULL, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done = subprocess.run([*pip, "install", "-q", "--no-index", "--find-links", wheels, "--no-warn-script-location",
                           *request["requirements"]], stdin=subprocess.DEVNULL, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        return {"ok": False, "stage": "install", "error": _tail(done.stdout)}
    manifest = {"key": request["key"], "requirements": request["requirements"], "wheels": request["wheels"]}
    with open(os.path.join(venv, SYNC_MANIFEST + ".tmp"), "w") as handle:
        json.dump(manifest, handle)
    os.replace(os.path.join(venv, SYNC_MANIFEST + ".tmp"), os.path.join(venv, SYNC_MANIFEST))
    return {"ok": True, "venv_python": python, "removed": removed}


def _canonical(name):
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def sync_clean(request):
    """Remove the venv and the shipped wheels, unless a process of the cluster still runs here."""
    import shutil

    run_dir, wheels, venv, _ = _sync_paths(request)
    busy = [p["name"] for p in listing({"run_dir": run_dir})["processes"] if p.get("alive")]
    if busy:
        return {"busy": busy, "removed": []}
    removed = []
    for path in (venv, wheels):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(path)
    return {"busy": [], "removed": removed}


OPERATIONS = {
    "start": start,
    "alive": alive,
    "stop": stop,
    "list": listing,
    "versions": versions,
    "prepare": prepare,
    "expand": expand,
    "tail": tail,
    "read": read,
    "listen": listen,
    "connect": connect,
    "sync_prepare": sync_prepare,
    "sync_install": sync_install,
    "sync_clean": sync_clean,
}


def main():
    # A Ctrl-C at clusterctl's terminal reaches this agent too (same process group, for a local
    # host): it must not cut a start between the process and its pid file. clusterctl waits for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The request comes on stdin (not argv, which every user of the host can read), one JSON line.
    line, held = sys.stdin.readline(), False
    while line.strip():
        request = json.loads(line)
        request["held"] = held  # its input still open: a watch sees the controller go by its end too
        serve(request)
        # ``hold``: stay for the next request on the same stdin (`up` sends its start once every host
        # is checked, with no second command); the end of input (nothing to start here, or the
        # controller gone) ends this agent having started nothing more.
        held = bool(request.get("hold"))
        line = sys.stdin.readline() if held else ""


def serve(request):
    operation = OPERATIONS[request["op"]]
    if request["op"] == "start" and request.get("watch_seconds"):
        operation = start_watched  # answers by itself, then reports exits
    try:
        answer = operation(request)
    except Refused as exc:
        answer = {"refused": exc.message, "hint": exc.hint}
    if answer is not None:  # None: the operation answered itself
        _answer(answer)


if __name__ == "__main__":
    main()
