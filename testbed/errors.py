"""The test bed's two errors: it could not be built or removed, or this machine cannot host one."""

from __future__ import annotations


class TestbedError(RuntimeError):
    """The bed could not be built or torn down; the message says what and where."""

    __test__ = False  # not a pytest test class


class TestbedUnavailableError(TestbedError):
    """This machine cannot host a bed (not root, no ``ip netns``, no sshd)."""
