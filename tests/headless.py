"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`).

Why a pipe: the browser tests need to wait for a React app, click, read the DOM and check that
images decoded, which `--dump-dom` alone cannot do, and the train env has no WebSocket client;
the pipe speaks the same protocol as NUL-terminated JSON on file descriptors 3 and 4. Chromium
comes from Debian (`containers/ensure-packages.sh LOG chromium:chromium`); tests skip with the
installer's reason when it cannot be installed (exit 3).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def chromium_or_skip(log: Path) -> str:
    """The chromium executable, installed through ensure-packages.sh when missing."""
    run = subprocess.run(
        [str(REPO / "containers" / "ensure-packages.sh"), str(log), "chromium:chromium"],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode == 3:
        pytest.skip(f"chromium is not installed and cannot be here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr
    path = shutil.which("chromium")
    assert path, "ensure-packages.sh succeeded but chromium is not on PATH"
    return path


def session_alive(session: int) -> bool:
    """Whether a process of `session` still runs (zombies, which write nothing, do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp session ...: comm may hold spaces, so split after ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                return True
    return False


class Browser:
    """One headless Chromium with one page; `with Browser(exe) as page: page.goto(url)`."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900) -> None:
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4: its ends are moved
        # above 10 first, so that placing them at 3 and 4 in the child overwrites neither.
        child_ends = [
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)
        ]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        to_browser_r, from_browser_w = child_ends
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # tests run as root in the project's containers
                "--disable-gpu",
                "--no-first-run",
                # No background fetches (refused here, many at a time) and no crash handler:
                # nothing but the page's own processes writes into the profile.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=lambda: (os.dup2(to_browser_r, 3), os.dup2(from_browser_w, 4)),
            start_new_session=True,  # close() stops its helper processes with it
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the browser and every helper it started, then remove its profile.

        The helpers (renderer, utility processes) can outlive the main process for a moment
        and still write into the profile: removing it then failed with 'Directory not empty'
        (seen 2026-12-03). So the whole session is killed and gone before the removal.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and session_alive(self.process.pid):
            time.sleep(0.05)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.profile.cleanup()

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events on the way are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll until `expression` is truthy; fail with the page's text when it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        text = self.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"timed out waiting for {expression!r}; page text:\n{text[:2000]}")

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the first match."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                session=True,
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window), for a person to look at."""
        data = self.call("Page.captureScreenshot", session=True, captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path
