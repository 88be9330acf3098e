"""`clusterctl -v`: every command clusterctl runs on a host, logged before it runs.

The log shows the argv as a shell would read it, with the agent's source abbreviated and secrets
masked: the value of every environment variable whose name contains PASSWORD, SECRET, TOKEN or
KEY becomes ``***``, in the JSON requests sent to the agent and in ``NAME=value`` words of setup
lines alike, and so does the word after an option so named (``--password VALUE``). `up --dry-run`
masks its lines with the same ``mask``. Formatting happens only when the logger is enabled (``-v``), so it costs nothing
otherwise. ``clusterctl.cli`` attaches the handler; ``clusterctl.render`` prints.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from typing import Any

logger = logging.getLogger("clusterctl.remote")

MASK = "***"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
AGENT_PLACEHOLDER = "<clusterctl agent.py>"
# NAME=value, NAME containing a secret word; the value quoted or up to the next blank or ';'.
_ASSIGNMENT = re.compile(
    r"\b([A-Za-z_][A-Za-z0-9_]*)=(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s;'\"]+)")
# --password VALUE: an option named for a secret, then its value as the next word.
_SECRET_OPTION = re.compile(r"--?[A-Za-z0-9_-]*(?:" + "|".join(SECRET_WORDS) + r")[A-Za-z0-9_-]*", re.IGNORECASE)
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z0-9_-]*(?:" + "|".join(SECRET_WORDS) + r")[A-Za-z0-9_-]*)(\s+)"
                     r"(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s;'\"-][^\s;'\"]*)", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def log_command(host: str, argv: list[str], stdin: str | None = None) -> None:
    """Log ``argv`` about to run on ``host``, with what it reads on stdin (a no-op without `-v`)."""
    if logger.isEnabledFor(logging.DEBUG):
        fed = f" <<< {shlex.quote(mask(stdin))}" if stdin is not None else ""
        logger.debug("%s: %s%s", host, describe(argv), fed)


def log_more(host: str, stdin: str) -> None:
    """Log a further request to an agent already running on ``host`` (no new command): shown with ``↳``."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s: <<< %s", host, shlex.quote(mask(stdin)), extra={"continued": True})


def describe(argv: list[str]) -> str:
    """``argv`` as one shell-quoted line, secrets masked; the caller puts ``AGENT_PLACEHOLDER``
    where the agent's source would be."""
    return " ".join(arg if arg == AGENT_PLACEHOLDER else shlex.quote(arg) for arg in _mask_words(argv))


def _mask_words(words: list[Any]) -> list[Any]:
    """Each word masked, and the word after a secret option (``["--password", VALUE]``) too."""
    return [MASK if index and isinstance(words[index - 1], str) and _SECRET_OPTION.fullmatch(words[index - 1])
            and isinstance(word, str) else (mask(word) if isinstance(word, str) and word != AGENT_PLACEHOLDER
                                            else _mask_json(word))
            for index, word in enumerate(words)]


def mask(text: str) -> str:
    """``text`` with secret values replaced by ``***``: in a JSON document, by key; else NAME=value."""
    if text.startswith("{"):
        try:
            document = json.loads(text)
        except ValueError:
            pass
        else:
            return json.dumps(_mask_json(document))
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_name(m.group(1)) else m.group(0), text)
    return _OPTION.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def _mask_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: (MASK if isinstance(key, str) and is_secret_name(key) and isinstance(item, str)
                      else _mask_json(item)) for key, item in value.items()}
    if isinstance(value, list):
        return _mask_words(value)
    if isinstance(value, str):
        return mask(value)  # e.g. setup lines and argv inside a start request
    return value
