"""Drive headless Chromium over the DevTools protocol, through a pipe: no driver, no extra package.

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each ending in a NUL
byte) on file descriptor 3 and writes its answers on 4. :class:`Chromium` opens one page, loads a file,
evaluates JavaScript in it, clicks at a point and takes screenshots: what the explore page's browser
test and the benchmark need.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

#: The names Debian, Ubuntu and others give the browser.
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find() -> str | None:
    """The Chromium executable on PATH, or None."""
    return next((p for p in map(shutil.which, EXECUTABLES) if p), None)


class BrowserError(RuntimeError):
    """Chromium answered a command with an error, or stopped."""


class Chromium:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, width: int = 1500, height: int = 1100) -> None:
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def wire() -> None:  # in the child: the pipe ends on descriptors 3 and 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        args = [
            executable,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.process = subprocess.Popen(
            args, preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        self.send("Page.enable", session=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close")
        for fd in (self._read, self._write):
            os.close(fd)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def send(self, method: str, session: bool = False, **params: object) -> dict:
        """Send one command and wait for its answer (events met on the way are dropped)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium stopped while answering {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (awaited, returned by value)."""
        result = self.send(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, path: Path, fragment: str = "", ready: str = "document.body && document.body.dataset.ready") -> None:
        """Load a local file and wait until ``ready`` is true in it (at most 20 s)."""
        url = path.resolve().as_uri() + (f"#{fragment}" if fragment else "")
        self.send("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 20
        while not self.evaluate(f"!!({ready})"):
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not become ready")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates, as a mouse makes it."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, whole: bool = True) -> Path:
        """The page as PNG: the whole page, or only the window."""
        data = self.send("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=whole)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
