"""The few exception types clusterctl raises for expected failures, and its exit codes.

Every expected failure is a ``ClusterctlError``: one line that names what failed (a host, a
file, a process) and a hint for the fix. ``clusterctl.error_handler`` turns it into that line on
stderr and the exit code it carries; users never see a traceback for a mistake they made.
"""

from __future__ import annotations

# Exit codes, documented in README.md ("Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # an operation failed, or `status` found the cluster degraded
EXIT_INVALID = 2  # bad inventory, option or argument; nothing was started
EXIT_SCHEDULER_DOWN = 3  # `status`: the scheduler does not answer
EXIT_INTERNAL = 70  # a bug in clusterctl; the traceback is in $CLUSTERCTL_HOME/crash.log
EXIT_INTERRUPTED = 130  # Ctrl-C


class ClusterctlError(Exception):
    """An expected failure, shown to the user as one line plus an optional hint."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details  # shown below the one-line message, e.g. the tail of a log

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class InvalidInputError(ClusterctlError):
    """The inventory, an option or an argument is wrong. Nothing was started."""

    exit_code = EXIT_INVALID


class HostError(ClusterctlError):
    """Something failed on (or on the way to) one host. ``reason`` is the message without the host."""

    def __init__(self, host: str, reason: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(f"{host}: {reason}", hint, details)
        self.host = host
        self.reason = reason


class UnresolvableHostError(HostError):
    """A host's name does not resolve: the inventory line that names it is the place to fix."""


class SchedulerUnreachableError(ClusterctlError):
    """The scheduler did not answer."""

    exit_code = EXIT_SCHEDULER_DOWN


class ForeignSchedulerError(ClusterctlError):
    """A scheduler answers at the cluster's address, but it is not this cluster's: never trusted,
    retired or closed."""


class LockedError(ClusterctlError):
    """Another clusterctl command holds the cluster's lock."""


class PartialFailureError(ClusterctlError):
    """Some hosts of a group call failed. Carries every host's error, and what the others returned."""

    def __init__(self, action: str, errors: dict[str, HostError], succeeded: list[str]) -> None:
        self.errors = errors
        self.succeeded = succeeded
        reasons = "; ".join(error.message for error in errors.values())
        message = f"{action} failed on {len(errors)} of {len(errors) + len(succeeded)} host(s): {reasons}"
        if succeeded:
            message += f" (succeeded on {', '.join(succeeded)})"
        hints = {error.hint for error in errors.values() if error.hint}
        super().__init__(message, hints.pop() if len(hints) == 1 else None)
