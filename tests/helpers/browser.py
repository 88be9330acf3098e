"""A real browser for tests: Debian's headless Chromium, driven over the DevTools protocol.

Pages are waited on by condition (a JavaScript expression that becomes true), never by a fixed
time budget, so a slow page on a loaded machine is still seen once it has rendered. The protocol
runs over a websocket; tornado (which distributed already needs) provides the client.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1280,900"]


class Browser:
    """One headless Chromium with its own profile; ``close()`` ends it by pid."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None, "no chromium"
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self._ids = itertools.count(1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def _page_socket(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as answer:
            pages = [t for t in json.load(answer) if t.get("type") == "page"]
        return str(pages[0]["webSocketDebuggerUrl"])

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            from tornado.websocket import websocket_connect

            connection = await websocket_connect(self._page_socket(), max_message_size=64 * 1024 * 1024)
            try:
                ident = next(self._ids)
                await connection.write_message(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    message = await connection.read_message()
                    if message is None:
                        raise RuntimeError(f"chromium closed the DevTools connection during {method}")
                    answer = json.loads(message)
                    if answer.get("id") == ident:
                        if "error" in answer:
                            raise RuntimeError(f"{method}: {answer['error']}")
                        return dict(answer.get("result") or {})
            finally:
                connection.close()

        return asyncio.run(call())

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, timeout: float) -> bool:
        """Whether ``expression`` became truthy in the page within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.25)
        return bool(self.evaluate(expression))

    def screenshot(self, path: Path) -> Path:
        data = self._call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
