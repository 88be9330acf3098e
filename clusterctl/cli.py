"""The command line: click options only. Each command calls one function in ``clusterctl.commands``,
hands its result to ``clusterctl.render`` and returns the exit code the result carries; every
exception is mapped to a message and a code by ``clusterctl.error_handler``. Heavy modules
(distributed, paramiko, rich) are imported inside the commands, so `clusterctl --help` stays fast.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import click

from clusterctl import __version__, error_handler, timing
from clusterctl.errors import EXIT_OK, ClusterctlError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

cluster_option = click.option("--cluster", "-c", "cluster", metavar="NAME",
                              help="Cluster name (default: the one `up` started last).")
json_option = click.option("--json", "json_output", is_flag=True, help="Print a JSON document for scripts.")
timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=timing.WORKER_TIMEOUT, show_default=True,
                              help="Seconds to wait for every worker to register.")
mismatch_option = click.option("--allow-version-mismatch", is_flag=True,
                               help="Start even when hosts run other versions than the scheduler host.")
limit_option = click.option(
    "--limit", "limit", multiple=True, metavar="PATTERN",
    help="Only the hosts PATTERN names: an alias, a group or a glob like 'node0*' (quote it); repeatable.")
config_argument = click.argument("config", required=False, type=click.Path(dir_okay=False))
QUIET_HELP = "Print no progress, only results and errors."
VERBOSE_HELP = "Log every command run on a host to stderr (secrets masked)."


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)["quiet"] = True


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from clusterctl import render

        render.enable_remote_log()


def global_options(command: Any) -> Any:
    """-q and -v, accepted after the command too (`clusterctl status -v`) and listed in its help."""
    command = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose,
                           help=VERBOSE_HELP)(command)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet,
                        help=QUIET_HELP)(command)


def _progress(ctx: click.Context, json_output: bool = False) -> Any:
    """The progress display for a long command, and the SSH password prompt that pauses it."""
    from clusterctl import render

    shown = render.progress(quiet=ctx.obj["quiet"], json_output=json_output)
    return shown, render.password_prompt(shown)


def _report(report: Any, json_output: bool) -> None:
    from clusterctl import render

    for text in report.warnings:
        render.warning(text)
    if json_output:
        render.print_json(render.report_document(report))
    else:
        render.cluster_report(report)


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  clusterctl init                       write a starter cluster.yaml
  clusterctl check cluster.yaml         is every host ready? (starts nothing)
  clusterctl up configs/local.yaml      start the cluster the inventory describes
  clusterctl status                     what runs, as the scheduler sees it
  clusterctl logs -f gpu1               follow a worker's log
  clusterctl add-worker --resources GPU=3
  eval $(clusterctl env)                then a plain Client() connects
  clusterctl down                       stop everything, verified

Run `clusterctl COMMAND --help` for a command's options.""")
@click.version_option(__version__, "--version", "-V", prog_name="clusterctl")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool) -> None:
    """Turn a YAML inventory of machines into a running Dask cluster; show it, grow it, take it down."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    if verbose:
        from clusterctl import render

        render.enable_remote_log()


@cli.command(epilog="""\b
Examples:
  clusterctl up configs/local.yaml
  clusterctl up cluster.yaml --dry-run       print the commands per host, start nothing
  clusterctl up examples/fleet.yaml --dry-run   what ranges, groups and per-GPU workers expand to
  clusterctl up cluster.yaml --restart       restart everything
  clusterctl up cluster.yaml --rolling       apply a changed inventory one worker group at a time
  clusterctl up cluster.yaml --limit 'node0*'   reconcile only node01..node09; other hosts untouched
  clusterctl up cluster.yaml --json          the status document once every worker is up

\b
On a terminal, one live row per host (connecting, checked, started, registered, or failed
with its reason); finished hosts are counted, and a summary stays when it is done.""")
@click.argument("config", type=click.Path(dir_okay=False))
@timeout_option
@click.option("--dry-run", is_flag=True, help="Print each process's exact command line, per host, and start nothing.")
@click.option("--restart", is_flag=True, help="Stop and start every process, healthy or not.")
@click.option("--rolling", is_flag=True,
              help="Restart changed worker groups a batch at a time: retire (data moves), stop, start, wait.")
@click.option("--max-unavailable", type=click.IntRange(min=1), default=1, show_default=True, metavar="K",
              help="With --rolling: worker groups down at once.")
@mismatch_option
@limit_option
@json_option
@click.pass_context
@global_options
def up(ctx: click.Context, config: str, timeout: float, dry_run: bool, restart: bool, rolling: bool,
       max_unavailable: int, allow_version_mismatch: bool, limit: tuple[str, ...], json_output: bool) -> int:
    """Start the scheduler and every worker group of CONFIG, on all hosts at once.

    Waits until the scheduler reports every expected worker. On a running or half-running
    cluster it reconciles: healthy processes are left alone, dead or changed ones are started
    again, workers added with add-worker are kept. On failure it stops what it started and names
    the process that did not come up, with the end of its log.
    """
    from clusterctl import render
    from clusterctl.commands.up import DryRun
    from clusterctl.commands.up import up as run_up

    progress, prompt = _progress(ctx, json_output)
    result = run_up(config, progress, prompt, timeout=timeout, dry_run=dry_run,
                    allow_version_mismatch=allow_version_mismatch, restart=restart, rolling=rolling,
                    max_unavailable=max_unavailable, limit=list(limit))
    if isinstance(result, DryRun):
        render.dry_run(result, json_output)
        return EXIT_OK
    _report(result, json_output)
    return result.exit_code


@cli.command(epilog="""\b
Examples:
  clusterctl status
  clusterctl status --processes        also check every recorded pid on its host
  clusterctl status --json | jq '.workers[].name'
  clusterctl status --watch            redraw every 2 seconds until Ctrl-C
  clusterctl status -p --watch=5       with the pids, every 5 seconds
  clusterctl status --limit node07 -p  only node07's workers and processes

\b
Exit codes: 0 every expected worker is present, 1 degraded (some missing),
3 the scheduler does not answer; with --watch, 130 when stopped with Ctrl-C.""")
@config_argument
@cluster_option
@click.option("--processes", "-p", is_flag=True, help="Also check each recorded pid on its host.")
@click.option("--watch", "-w", type=click.FloatRange(min=0.2), is_flag=False, flag_value=2.0, default=None,
              metavar="[SECONDS]", help="Refresh every SECONDS (default 2) until Ctrl-C; with --json, one "
                                        "document per line.")
@limit_option
@json_option
@global_options
def status(config: str | None, cluster: str | None, processes: bool, watch: float | None, limit: tuple[str, ...],
           json_output: bool) -> int:
    """Show the cluster as the scheduler sees it: every worker, its resources and its load."""
    from clusterctl.commands.status import status as run_status

    if watch is not None:
        from clusterctl import render
        from clusterctl.commands.status import watch as run_watch

        render.watch(run_watch(cluster, config, processes, watch, list(limit)), json_output, watch)
        return EXIT_OK  # not reached: only Ctrl-C (130) or an error ends it
    report = run_status(cluster, config, processes, list(limit))
    _report(report, json_output)
    return report.exit_code


@cli.command("add-worker", epilog="""\b
Examples:
  clusterctl add-worker --resources GPU=3                 one more worker on this machine
  clusterctl add-worker --host node4 --nworkers 2 --nthreads 4 --memory-limit 8GB
  clusterctl add-worker --resources "GPU=1 MEMORY=256e9" --name big
  clusterctl add-worker --host gpu3 --gpus auto           one worker per GPU nvidia-smi lists on gpu3
  clusterctl add-worker --host gpu3 --gpus 0,2 --name big   workers big-gpu0 and big-gpu2""")
@config_argument
@cluster_option
@click.option("--host", metavar="HOST", help="Inventory alias or address (default: this machine).")
@click.option("--nworkers", "--nprocs", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--nthreads", type=int, default=1, show_default=True, help="Threads per worker process.")
@click.option("--memory-limit", metavar="SIZE", help="Per process: 4GB, a fraction like 0.5, auto or 0.")
@click.option("--resources", metavar="SPEC", help='Abstract resources, e.g. "GPU=3" or "GPU=1 MEMORY=256e9".')
@click.option("--name", metavar="NAME", help="Worker name (default: <host>-add<N>).")
@click.option("--gpus", metavar="auto|N|I,J", help="One worker per GPU of the host, as `gpus:` in a worker group: "
              "all nvidia-smi lists, the first N, or these indices (one index: `2,`). Names <name>-gpu<index>.")
@timeout_option
@mismatch_option
@json_option
@click.pass_context
@global_options
def add_worker(ctx: click.Context, config: str | None, cluster: str | None, host: str | None, nworkers: int,
               nthreads: int, memory_limit: str | None, resources: str | None, name: str | None, gpus: str | None,
               timeout: float, allow_version_mismatch: bool, json_output: bool) -> int:
    """Grow the running cluster by one `dask worker` invocation (or one per GPU) and wait until it registers."""
    from clusterctl.commands.add_worker import add_worker as run_add_worker

    progress, prompt = _progress(ctx, json_output)
    report = run_add_worker(progress, cluster, config, host=host, nworkers=nworkers, nthreads=nthreads,
                            memory_limit=memory_limit, resources=resources, name=name, timeout=timeout,
                            allow_version_mismatch=allow_version_mismatch, password_prompt=prompt, gpus=gpus)
    _report(report, json_output)
    return report.exit_code


@cli.command("remove-worker", epilog="""\b
Examples:
  clusterctl remove-worker me-add1                  a worker added with add-worker on `me`
  clusterctl remove-worker gpu2-0                   one worker of a group
  clusterctl remove-worker tcp://10.0.0.2:40123     by address, as `status` shows it""")
@click.argument("targets", nargs=-1, required=True, metavar="NAME|ADDRESS...")
@cluster_option
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Inventory of the cluster.")
@json_option
@click.pass_context
@global_options
def remove_worker(ctx: click.Context, targets: tuple[str, ...], cluster: str | None, config: str | None,
                  json_output: bool) -> int:
    """Retire workers gracefully (their data moves first), then stop their processes."""
    from clusterctl import render
    from clusterctl.commands.remove_worker import remove_worker as run_remove_worker

    progress, prompt = _progress(ctx, json_output)
    render.remove_result(run_remove_worker(progress, list(targets), cluster, config, prompt), json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl down
  clusterctl down --cluster lab
  clusterctl down cluster.yaml --grace 30   works without local state, from the hosts' pid files
  clusterctl down --limit node07            retire node07's workers (data moves), stop them; the rest runs
  clusterctl down --limit 'gpu*' --limit node03

\b
--limit stops every process on the selected hosts, workers added by add-worker, scale or adapt
included, and keeps the rest running and recorded. The scheduler's host can be selected only
with every host that runs workers (dask workers exit with their scheduler): that is a full down.""")
@config_argument
@cluster_option
@click.option("--grace", type=click.FloatRange(min=0), default=timing.DOWN_GRACE, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@limit_option
@json_option
@click.pass_context
@global_options
def down(ctx: click.Context, config: str | None, cluster: str | None, grace: float, limit: tuple[str, ...],
         json_output: bool) -> int:
    """Retire the workers, close the scheduler, and verify every process is gone.

    Exits 0 only when every recorded process is verified gone; then the local state is removed.
    Running it again is harmless.
    """
    from clusterctl import render
    from clusterctl.commands.down import down as run_down

    progress, prompt = _progress(ctx, json_output)
    result = run_down(progress, cluster, config, grace=grace, password_prompt=prompt, limit=list(limit))
    render.down_result(result, json_output, limited=bool(limit))
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  eval $(clusterctl env)
  python -c 'from distributed import Client; print(Client())'""")
@config_argument
@cluster_option
@json_option
@global_options
def env(config: str | None, cluster: str | None, json_output: bool) -> int:
    """Print shell exports so that a plain `Client()` connects to the cluster."""
    from clusterctl import render
    from clusterctl.commands.env import env as run_env

    render.env_exports(run_env(cluster, config), json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl adapt --minimum 1 --maximum 8         in the foreground, until Ctrl-C
  clusterctl adapt cluster.yaml --detach           as a supervisor; `clusterctl status` shows it
  kill $(clusterctl status --json | jq .adaptive.pid)   stops it, leaving the cluster as it is

\b
Workers are added on the inventory's `elastic.hosts` and retired (their data moves first), then
stopped and verified gone; the fixed `workers:` groups are never removed.""")
@config_argument
@cluster_option
@click.option("--minimum", type=click.IntRange(min=0), help="Fewest workers (default: elastic.minimum).")
@click.option("--maximum", type=click.IntRange(min=0), help="Most workers (default: elastic.maximum).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between two looks at the scheduler's load.")
@click.option("--detach", is_flag=True, help="Run as a supervisor in the background; its pid and log are recorded.")
@click.option("--log-file", hidden=True)  # set by --detach for the supervisor it starts
@json_option
@global_options
def adapt(config: str | None, cluster: str | None, minimum: int | None, maximum: int | None, interval: float,
          detach: bool, log_file: str | None, json_output: bool) -> int:
    """Scale the running cluster with the load, with distributed's adaptive policy, between minimum and maximum.

    In the foreground it runs until Ctrl-C or SIGTERM, which stop adapting and leave the cluster as
    it is. `down` stops a detached supervisor first.
    """
    import logging

    from clusterctl import render
    from clusterctl.commands.adapt import adapt as run_adapt

    if not detach:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = run_adapt(cluster, config, minimum, maximum, interval, detach, log_file,
                       on_started=lambda started: render.adapt_result(started, json_output))
    if detach:
        render.adapt_result(result, json_output)
    return EXIT_OK


@cli.command("list", epilog="""\b
Examples:
  clusterctl list
  clusterctl list --json | jq -r '.clusters[] | select(.state == "gone") | .name'""")
@json_option
@global_options
def list_command(json_output: bool) -> int:
    """Every cluster recorded on this machine: its scheduler, whether it answers, workers, age.

    A cluster whose processes are all gone but whose state remains is shown as `gone`, with the
    command that forgets it.
    """
    from clusterctl import render
    from clusterctl.commands.list_clusters import list_clusters

    render.list_result(list_clusters(), json_output)
    return EXIT_OK


@cli.command("exec", epilog="""\b
Examples:
  clusterctl exec -- nvidia-smi
  clusterctl exec --limit 'node0*' -- df -h /tmp
  clusterctl exec --config cluster.yaml -- python3 -m pip list
  clusterctl exec --shell 'free -g | head -2'
  clusterctl exec --json -- uptime | jq '.hosts[] | select(.exit_code != 0)'

\b
Exit codes: 0 the command succeeded on every host, 1 it failed or could not run on some.""")
@click.argument("argv", nargs=-1, metavar="-- CMD [ARG]...")
@cluster_option
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Inventory of the cluster.")
@limit_option
@click.option("--shell", "shell_line", metavar="LINE", help="Run LINE with /bin/sh -c instead of an argv.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds the command may run on each host.")
@json_option
@click.pass_context
@global_options
def exec_command(ctx: click.Context, argv: tuple[str, ...], cluster: str | None, config: str | None,
                 limit: tuple[str, ...], shell_line: str | None, timeout: float, json_output: bool) -> int:
    """Run one command on every host of the cluster at once; print each host's output and exit code.

    The command after `--` is an argv: no shell sees it (on SSH hosts it is quoted word by word).
    """
    from clusterctl import render
    from clusterctl.commands.exec import exec_on_hosts
    from clusterctl.errors import InvalidInputError

    if shell_line is not None and argv:
        raise InvalidInputError("give a command after -- or --shell LINE, not both")
    command = ["/bin/sh", "-c", shell_line] if shell_line is not None else list(argv)
    progress, prompt = _progress(ctx, json_output)
    result = exec_on_hosts(command, progress, cluster, config, list(limit), timeout, prompt)
    render.exec_result(result, json_output)
    return result.exit_code


@cli.command(epilog="""\b
Examples:
  clusterctl bench                        overhead, throughput and bandwidth, beside a LocalCluster
  clusterctl bench --tasks 5000 --repeats 5
  clusterctl bench --no-baseline --json | jq .cluster_figures.overhead_ms""")
@config_argument
@cluster_option
@click.option("--tasks", type=click.IntRange(min=10), default=1000, show_default=True, help="Tasks per batch.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Batches per figure; the median is shown.")
@click.option("--transfer-mb", type=click.IntRange(min=1), default=64, show_default=True,
              help="Size of the result moved between two workers.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also measure a LocalCluster of 2 processes in this process.")
@json_option
@click.pass_context
@global_options
def bench(ctx: click.Context, config: str | None, cluster: str | None, tasks: int, repeats: int, transfer_mb: int,
          baseline: bool, json_output: bool) -> int:
    """Measure the running cluster: the scheduler's per-task overhead, throughput with every worker busy,
    and worker-to-worker bandwidth, next to a LocalCluster here. Every key it creates is released."""
    from clusterctl import render
    from clusterctl.commands.bench import bench as run_bench

    progress, _ = _progress(ctx, json_output)
    render.bench_result(run_bench(progress, cluster, config, tasks, repeats, transfer_mb, baseline), json_output)
    return EXIT_OK


# --- the operator's view ----------------------------------------------------------------------


def _complete_logs_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion for `logs TARGET`: the running cluster's processes, workers and hosts."""
    from clusterctl import state
    from clusterctl.commands.logs import targets

    try:
        recorded = state.load(state.resolve_name(ctx.params.get("cluster"), ctx.params.get("config")))
    except (ClusterctlError, OSError):
        return []
    return [t for t in targets(recorded) if t.startswith(incomplete)] if recorded else []


@cli.command(epilog="""\b
Examples:
  clusterctl logs                     the last 50 lines of every process, each line [prefixed]
  clusterctl logs scheduler -n 200
  clusterctl logs gpu2-0              the `dask worker` process that runs worker gpu2-0
  clusterctl logs node3 -f            every process on host node3, following until Ctrl-C
  clusterctl logs --limit 'gpu*' -n 20   every process on the gpu hosts

\b
TARGET: `scheduler`, a worker group's process name, a worker name, or a host alias.""")
@click.argument("target", required=False, shell_complete=_complete_logs_target)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True, metavar="N",
              help="Show the last N lines of each log first.")
@cluster_option
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Inventory of the cluster.")
@limit_option
@click.pass_context
@global_options
def logs(ctx: click.Context, target: str | None, follow: bool, lines: int, cluster: str | None,
         config: str | None, limit: tuple[str, ...]) -> int:
    """Show the logs of the scheduler, of workers, or of every process on a host.

    Logs are read on their hosts through the same connection clusterctl uses for everything else;
    following polls each log twice a second until Ctrl-C (exit 130) or until `down`.
    """
    from clusterctl import render
    from clusterctl.commands.logs import logs as run_logs

    stream = run_logs(cluster, config, target, lines=lines, follow=follow, limit=list(limit))
    render.log_stream(stream, quiet=ctx.obj["quiet"])
    return stream.exit_code


@cli.command(epilog="""\b
Examples:
  clusterctl check cluster.yaml
  clusterctl check cluster.yaml --json | jq '.hosts[] | select(.ok | not)'
  clusterctl check cluster.yaml --env       also every package's version per host and here
  clusterctl check cluster.yaml --limit node07   only node07 (the scheduler's host is asked, not shown)

\b
Exit codes: 0 every check passed, 1 some check failed, 2 the inventory is invalid.""")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              metavar="SECONDS", help="How long a worker host may take to connect to the scheduler port.")
@click.option("--env", "show_environment", is_flag=True,
              help="Also show the environment: every compared package's version per host and on this machine.")
@limit_option
@json_option
@click.pass_context
@global_options
def check(ctx: click.Context, config: str, connect_timeout: float, show_environment: bool, limit: tuple[str, ...],
          json_output: bool) -> int:
    """Check every host of CONFIG before `up`, starting nothing: reachable, python and versions right,
    the GPUs of hosts whose worker groups have `gpus:`, the scheduler port free on its host and
    reachable from every worker host."""
    from clusterctl import render
    from clusterctl.commands.check import check as run_check

    progress, prompt = _progress(ctx, json_output)
    report = run_check(config, progress, connect_timeout=connect_timeout, show_environment=show_environment,
                       limit=list(limit), password_prompt=prompt)
    render.check_report(report, json_output)
    return report.exit_code


@cli.command(epilog="""\b
Examples:
  clusterctl sync cluster.yaml            build the wheelhouse here, install it on every host
  clusterctl sync cluster.yaml --json | jq '.hosts[] | {host, shipped_bytes, installed}'
  clusterctl sync cluster.yaml --clean    remove each host's venv and shipped wheels""")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--clean", is_flag=True, help="Remove each host's venv and shipped wheels instead (the cluster must be down).")
@json_option
@click.pass_context
@global_options
def sync(ctx: click.Context, config: str, clean: bool, json_output: bool) -> int:
    """Install the environment of CONFIG into a venv under each host's run_dir, offline, starting nothing.

    Builds a wheelhouse here for each host platform and python, ships over SSH only the wheels a
    host lacks, and installs them with `pip install --no-index`. `up` does the same first when the
    inventory says `environment: {sync: true}`.
    """
    from clusterctl import render
    from clusterctl.commands.sync import sync as run_sync

    progress, prompt = _progress(ctx, json_output)
    render.sync_result(run_sync(config, progress, prompt, clean=clean), json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl init                     write ./cluster.yaml
  clusterctl init lab.yaml --force    replace lab.yaml
  clusterctl init - | less            print it instead""")
@click.argument("path", required=False, default="cluster.yaml", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@global_options
def init(path: str, force: bool) -> int:
    """Write a commented starter inventory to PATH (default cluster.yaml); it runs on this machine as is."""
    from clusterctl import render
    from clusterctl.commands.init import init as run_init

    render.init_result(run_init(path, force=force))
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl schema > cluster.schema.json
  then put this first in cluster.yaml:  # yaml-language-server: $schema=cluster.schema.json""")
@global_options
def schema() -> int:
    """Print the inventory's JSON Schema, for editors that validate and complete cluster.yaml."""
    from clusterctl import render
    from clusterctl.commands.schema import schema as run_schema

    render.print_json(run_schema())
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl dashboard                  prints http://127.0.0.1:PORT/status (through SSH: Ctrl-C closes it)
  clusterctl dashboard --cluster lab
  clusterctl dashboard --socket ~/dash.sock   only you can connect: curl --unix-socket ~/dash.sock
                                        http://localhost/status, or `ssh -L 8787:$HOME/dash.sock` to it""")
@config_argument
@cluster_option
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False),
              help="Listen on this new Unix socket (mode 0600) instead of a 127.0.0.1 port any local user can use.")
@global_options
def dashboard(config: str | None, cluster: str | None, socket_path: str | None) -> int:
    """Reach the scheduler's dashboard from this machine, through an SSH tunnel when needed.

    With `dashboard: local` in the inventory the dashboard listens only on the scheduler host's
    loopback; this command forwards a local port to it until you press Ctrl-C. Every user of
    this machine can use that port; with --socket only you can. A scheduler on this machine needs
    no tunnel: the command prints the URL and exits.
    """
    import time

    from clusterctl import render
    from clusterctl.commands.dashboard import dashboard as open_dashboard

    with open_dashboard(cluster, config, socket_path) as shown:
        if not shown.tunnel:  # on this machine already: nothing to keep open
            render.line(f"dashboard: {shown.url}")
            return EXIT_OK
        render.line(f"dashboard: {shown.url}  (Ctrl-C to close)")
        sys.stdout.flush()
        while True:
            time.sleep(3600)


@cli.command("ssh-config", epilog="""\b
Examples:
  clusterctl ssh-config node1 --config cluster.yaml    an inventory host: its address/user/port/key win
  clusterctl ssh-config db7                            any host name, from the ssh config alone
  clusterctl ssh-config node1 --config cluster.yaml --json | jq .options.hostname

\b
Compare with OpenSSH (for an inventory host, give ssh the same -o HostName/-l/-p/-i):
  keys='^(user|hostname|port|identitiesonly|stricthostkeychecking|serveraliveinterval|hostkeyalias|"""
    """identityfile|certificatefile|globalknownhostsfile|userknownhostsfile|connecttimeout|proxycommand|proxyjump) '
  diff <(clusterctl ssh-config db7) <(ssh -G db7 | grep -E "$keys")""")
@click.argument("host", metavar="HOST")
@click.option("--config", "config", type=click.Path(dir_okay=False), metavar="CONFIG",
              help="Inventory whose address/user/port/identity_file for HOST override the ssh config.")
@json_option
@global_options
def ssh_config(host: str, config: str | None, json_output: bool) -> int:
    """Print the ssh settings clusterctl uses for HOST, resolved as `ssh -G` resolves them.

    Lowercase `key value` lines in `ssh -G`'s order, one line per value of a repeated key, for the
    keys clusterctl honours. $CLUSTERCTL_SSH_CONFIG, when set, is read alone, like `ssh -F FILE`.
    """
    from clusterctl import render
    from clusterctl.commands.ssh_config import ssh_config as run_ssh_config

    render.ssh_config(run_ssh_config(host, config), json_output)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    code = run(argv)
    if all(thread.daemon or thread is threading.main_thread() for thread in threading.enumerate()):
        # Everything is closed and nothing else runs: skip the interpreter's teardown, which frees every
        # module distributed and paramiko loaded one by one (a fifth of a second after the answer).
        _flush()
        os._exit(code)
    sys.exit(code)


def _flush() -> None:
    """What buffers hold reaches its stream before ``os._exit``; a reader that went away is no error here."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def run(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and map every outcome to an exit code (see README, "Exit codes")."""
    return error_handler.run(lambda: cli.main(args=argv, prog_name="clusterctl", standalone_mode=False))
