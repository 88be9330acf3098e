"""How a long command tells the user where it is: the interface only.

``clusterctl.render`` provides the implementations (a live line on a terminal, plain lines in a
pipe); commands receive one and never print. The SSH password prompt is not part of it: it is
passed on its own (``PasswordPrompt``) to the one place that may need it, the SSH transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: A host's states in `up` (connecting -> checked -> started -> registered, or kept when it had nothing
#: to start) and `down` (retiring -> stopping -> stopped); ``failed`` ends either, with its reason.
IN_FLIGHT = ("connecting", "checked", "started", "retiring", "stopping")
FINISHED = ("registered", "kept", "stopped")
FAILED = "failed"
HOST_STATES = (*IN_FLIGHT, *FINISHED, FAILED)

#: Asks the user for a host's SSH password (only ever called on a terminal).
PasswordPrompt = Callable[[str], str]


class Progress(Protocol):
    def step(self, message: str) -> None: ...

    def waiting(self, ready: list[str], expected: list[str]) -> None: ...

    def host(self, alias: str, state: str, detail: str = "") -> None:
        """Where one host is: one of ``HOST_STATES`` and a detail (a count, a failure's reason)."""

    def done(self) -> None: ...


class SilentProgress:
    """For callers that show nothing (the Python API, `check` without a terminal)."""

    def step(self, message: str) -> None:
        pass

    def waiting(self, ready: list[str], expected: list[str]) -> None:
        pass

    def host(self, alias: str, state: str, detail: str = "") -> None:
        pass

    def done(self) -> None:
        pass
