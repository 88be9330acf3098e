"""Every outcome of a command -> what the user sees and the exit code (README.md, "Exit codes").

The one place that maps exceptions to messages: an expected failure (``ClusterctlError``) is one
``error:`` line with its hint and its own exit code; a usage mistake is one line and 2; Ctrl-C is
130; a closed stdout (``clusterctl status | head -1``) ends the command quietly; anything else is a
bug: 70, one line, the traceback in ``$CLUSTERCTL_HOME/crash.log``.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import click

from clusterctl.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, ClusterctlError


def run(main: Callable[[], object]) -> int:
    """Call ``main`` (the click group, already given its arguments) and return the exit code."""
    from clusterctl import render

    try:
        result = main()
        return result if isinstance(result, int) else EXIT_OK
    except SystemExit:
        # click ends with exit 1 when its own output (help, version) meets a closed pipe.
        if render.reader_gone():
            return EXIT_OK
        raise
    except BrokenPipeError:
        return EXIT_OK  # stdout's reader has gone while click printed: not a failure of the command
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        render.help_text(exc.ctx.get_help() if exc.ctx is not None else "run `clusterctl --help`")
        return EXIT_OK
    except click.UsageError as exc:
        # One line, like every other error, instead of click's usage block.
        command = exc.ctx.command_path if exc.ctx is not None else "clusterctl"
        render.error(exc.format_message(), f"see `{command} --help`")
        return EXIT_INVALID
    except click.ClickException as exc:
        render.error(exc.format_message())
        return exc.exit_code if exc.exit_code else EXIT_INVALID
    except (click.exceptions.Abort, KeyboardInterrupt):
        render.interrupted()
        return EXIT_INTERRUPTED
    except ClusterctlError as exc:
        from clusterctl.preflight import VersionMismatchError

        if isinstance(exc, VersionMismatchError):
            render.version_table(exc.report)
        render.error(exc.message, exc.hint, exc.details)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug, reported as one
        return _crash(exc)
    finally:
        render.finish()


def _crash(exc: Exception) -> int:
    from clusterctl import paths, render

    log = paths.home() / "crash.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write("".join(traceback.format_exception(exc)))
    render.internal_error(f"{type(exc).__name__}: {exc}", str(log))
    return EXIT_INTERNAL

