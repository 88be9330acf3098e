"""The command line: click options only. Each command calls one function in ``clusterctl.commands``
and hands its result to ``clusterctl.render``. Heavy modules (distributed, paramiko, rich) are
imported inside the commands, so `clusterctl --help` stays fast.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from clusterctl import __version__
from clusterctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, ClusterctlError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

cluster_option = click.option("--cluster", "-c", "cluster", metavar="NAME",
                              help="Cluster name (default: the one `up` started last).")
json_option = click.option("--json", "json_output", is_flag=True, help="Print a JSON document for scripts.")
timeout_option = click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
                              help="Seconds to wait for every worker to register.")
mismatch_option = click.option("--allow-version-mismatch", is_flag=True,
                               help="Start even when hosts run other versions than the scheduler host.")
config_argument = click.argument("config", required=False, type=click.Path(dir_okay=False))


def _progress(ctx: click.Context, json_output: bool = False) -> Any:
    from clusterctl import render

    return render.progress(quiet=ctx.obj["quiet"], json_output=json_output)


def _report(report: Any, json_output: bool) -> None:
    from clusterctl import render

    if json_output:
        render.print_json(render.report_document(report))
    else:
        render.cluster_report(report)


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  clusterctl up configs/local.yaml      start the cluster the inventory describes
  clusterctl status                     what runs, as the scheduler sees it
  clusterctl add-worker --resources GPU=3
  eval $(clusterctl env)                then a plain Client() connects
  clusterctl down                       stop everything, verified

Run `clusterctl COMMAND --help` for a command's options.""")
@click.version_option(__version__, "--version", "-V", prog_name="clusterctl")
@click.option("-q", "--quiet", is_flag=True, help="Print no progress, only results and errors.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """Turn a YAML inventory of machines into a running Dask cluster; show it, grow it, take it down."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


@cli.command(epilog="""\b
Examples:
  clusterctl up configs/local.yaml
  clusterctl up cluster.yaml --dry-run       print the commands per host, start nothing
  clusterctl up cluster.yaml --restart       restart everything
  clusterctl up cluster.yaml --json          the status document once every worker is up""")
@click.argument("config", type=click.Path(dir_okay=False))
@timeout_option
@click.option("--dry-run", is_flag=True, help="Print the exact commands per host and start nothing.")
@click.option("--restart", is_flag=True, help="Stop and start every process, healthy or not.")
@mismatch_option
@json_option
@click.pass_context
def up(ctx: click.Context, config: str, timeout: float, dry_run: bool, restart: bool, allow_version_mismatch: bool,
       json_output: bool) -> int:
    """Start the scheduler and every worker group of CONFIG, on all hosts at once.

    Waits until the scheduler reports every expected worker. On a running or half-running
    cluster it reconciles: healthy processes are left alone, dead or changed ones are started
    again, workers added with add-worker are kept. On failure it stops what it started and names
    the process that did not come up, with the end of its log.
    """
    from clusterctl import render
    from clusterctl.commands.up import DryRun
    from clusterctl.commands.up import up as run_up

    result = run_up(config, _progress(ctx, json_output), timeout=timeout, dry_run=dry_run,
                    allow_version_mismatch=allow_version_mismatch, restart=restart)
    if isinstance(result, DryRun):
        render.dry_run(result, json_output)
        return EXIT_OK
    _report(result, json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl status
  clusterctl status --processes        also check every recorded pid on its host
  clusterctl status --json | jq '.workers[].name'

\b
Exit codes: 0 every expected worker is present, 1 degraded (some missing),
3 the scheduler does not answer.""")
@config_argument
@cluster_option
@click.option("--processes", "-p", is_flag=True, help="Also check each recorded pid on its host.")
@json_option
def status(config: str | None, cluster: str | None, processes: bool, json_output: bool) -> int:
    """Show the cluster as the scheduler sees it: every worker, its resources and its load."""
    from clusterctl.commands.status import status as run_status
    from clusterctl.errors import EXIT_FAILED, EXIT_SCHEDULER_DOWN

    report = run_status(cluster, config, processes)
    _report(report, json_output)
    if not report.scheduler_answers:
        return EXIT_SCHEDULER_DOWN
    return EXIT_OK if report.healthy else EXIT_FAILED


@cli.command("add-worker", epilog="""\b
Examples:
  clusterctl add-worker --resources GPU=3                 one more worker on this machine
  clusterctl add-worker --host node4 --nworkers 2 --nthreads 4 --memory-limit 8GB
  clusterctl add-worker --resources "GPU=1 MEMORY=256e9" --name big""")
@config_argument
@cluster_option
@click.option("--host", metavar="HOST", help="Inventory alias or address (default: this machine).")
@click.option("--nworkers", "--nprocs", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--nthreads", type=int, default=1, show_default=True, help="Threads per worker process.")
@click.option("--memory-limit", metavar="SIZE", help="Per process: 4GB, a fraction like 0.5, auto or 0.")
@click.option("--resources", metavar="SPEC", help='Abstract resources, e.g. "GPU=3" or "GPU=1 MEMORY=256e9".')
@click.option("--name", metavar="NAME", help="Worker name (default: <host>-add<N>).")
@timeout_option
@mismatch_option
@json_option
@click.pass_context
def add_worker(ctx: click.Context, config: str | None, cluster: str | None, host: str | None, nworkers: int,
               nthreads: int, memory_limit: str | None, resources: str | None, name: str | None, timeout: float,
               allow_version_mismatch: bool, json_output: bool) -> int:
    """Grow the running cluster by one `dask worker` invocation and wait until it registers."""
    from clusterctl.commands.add_worker import add_worker as run_add_worker

    report = run_add_worker(_progress(ctx, json_output), cluster, config, host=host, nworkers=nworkers,
                            nthreads=nthreads, memory_limit=memory_limit, resources=resources, name=name,
                            timeout=timeout, allow_version_mismatch=allow_version_mismatch)
    _report(report, json_output)
    return EXIT_OK


@cli.command("remove-worker", epilog="""\b
Examples:
  clusterctl remove-worker localhost-add1           a worker added with add-worker
  clusterctl remove-worker gpu2-0                   one worker of a group
  clusterctl remove-worker tcp://10.0.0.2:40123     by address, as `status` shows it""")
@click.argument("targets", nargs=-1, required=True, metavar="NAME|ADDRESS...")
@cluster_option
@click.option("--config", "config", type=click.Path(dir_okay=False), help="Inventory of the cluster.")
@json_option
@click.pass_context
def remove_worker(ctx: click.Context, targets: tuple[str, ...], cluster: str | None, config: str | None,
                  json_output: bool) -> int:
    """Retire workers gracefully (their data moves first), then stop their processes."""
    from clusterctl import render
    from clusterctl.commands.remove_worker import remove_worker as run_remove_worker

    render.remove_result(run_remove_worker(_progress(ctx, json_output), list(targets), cluster, config), json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  clusterctl down
  clusterctl down --cluster lab
  clusterctl down cluster.yaml --grace 30   works without local state, from the hosts' pid files""")
@config_argument
@cluster_option
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL.")
@json_option
@click.pass_context
def down(ctx: click.Context, config: str | None, cluster: str | None, grace: float, json_output: bool) -> int:
    """Retire the workers, close the scheduler, and verify every process is gone.

    Exits 0 only when every recorded process is verified gone; then the local state is removed.
    Running it again is harmless.
    """
    from clusterctl import render
    from clusterctl.commands.down import down as run_down

    render.down_result(run_down(_progress(ctx, json_output), cluster, config, grace=grace), json_output)
    return EXIT_OK


@cli.command(epilog="""\b
Examples:
  eval $(clusterctl env)
  python -c 'from distributed import Client; print(Client())'""")
@config_argument
@cluster_option
@json_option
def env(config: str | None, cluster: str | None, json_output: bool) -> int:
    """Print shell exports so that a plain `Client()` connects to the cluster."""
    from clusterctl import render
    from clusterctl.commands.env import env as run_env

    render.env_exports(run_env(cluster, config), json_output)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and map every outcome to an exit code (see README, "Exit codes")."""
    try:
        result = cli.main(args=argv, prog_name="clusterctl", standalone_mode=False)
        return result if isinstance(result, int) else EXIT_OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code else EXIT_INVALID
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ClusterctlError as exc:
        from clusterctl import render
        from clusterctl.commands.preflight import VersionMismatchError

        if isinstance(exc, VersionMismatchError):
            render.version_table(exc.report)
        render.error(exc.message, exc.hint, exc.details)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, reported as one
        return _crash(exc)


def _crash(exc: Exception) -> int:
    from clusterctl import paths

    log = paths.home() / "crash.log"
    with open(log, "a") as handle:
        handle.write("".join(traceback.format_exception(exc)))
    print(f"internal error: {type(exc).__name__}: {exc} (traceback in {log}; please report it)", file=sys.stderr)
    return EXIT_INTERNAL
