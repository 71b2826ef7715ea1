"""report.html as a browser shows it: a headless Chromium driven over the DevTools protocol (its pipe transport,
standard library only) loads the page, and says what a user would have met: console errors, uncaught exceptions,
images that do not decode, the visible text, and a full-page screenshot."""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
WIDTH = 1100  # CSS pixels: the report's body is at most 1000 wide

# Every <img> decoded (or failed to), as [alt, src (a data: URL's head), ok, naturalWidth, error].
_IMAGES_JS = """Promise.all(Array.from(document.images).map(img => {
  const src = img.src.startsWith('data:') ? img.src.slice(0, 40) + '…' : img.src;
  return img.decode().then(() => [img.alt, src, img.naturalWidth > 0, img.naturalWidth, ''],
                           e => [img.alt, src, false, img.naturalWidth, String(e)]);
}))"""


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


@dataclass
class PageCheck:
    """What loading one page showed."""

    url: str
    text: str  # document.body.innerText
    console_errors: list[str] = field(default_factory=list)  # console.error/assert, exceptions, error log entries
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    screenshot: bytes = b""  # PNG of the whole page

    @property
    def problems(self) -> list[str]:
        return [*(f"console: {e}" for e in self.console_errors), *(f"image: {i}" for i in self.broken_images)]


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable on PATH, else None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def check_page(page: Path, *, chromium: str | None = None, timeout: float = 60.0) -> PageCheck:
    """Open `page` in headless Chromium and report console errors, undecodable images, its text and a screenshot."""
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserError(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)})")
    with tempfile.TemporaryDirectory(prefix="edgeprune-chromium-") as profile, _DevTools(executable, profile) as tools:
        return tools.check(Path(page).resolve().as_uri(), timeout)


class _DevTools:
    """One headless Chromium and its DevTools pipe (--remote-debugging-pipe: commands in on fd 3, replies and
    events out on fd 4, each a JSON message ended by a NUL byte)."""

    def __init__(self, executable: str, profile: str):
        self.executable, self.profile = executable, profile
        self.next_id = 0
        self.pending = b""
        self.events: list[dict] = []

    def __enter__(self) -> _DevTools:
        to_browser, self.writer = os.pipe()
        self.reader, from_browser = os.pipe()
        # the child's ends moved above 3 and 4 first, so that wiring one cannot overwrite the other
        to_browser, from_browser = (_above(fd, 10) for fd in (to_browser, from_browser))

        def wire_pipes():  # in the child: its fd 3 reads our commands, its fd 4 writes to us (dup2: inheritable)
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        args = [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, close_fds=False, preexec_fn=wire_pipes)  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except BrowserError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()
        os.close(self.writer)
        os.close(self.reader)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0):
        """One command; its result (events that arrive meanwhile are kept in self.events)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self.writer, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise BrowserError(f"Chromium exited: {self._stderr_tail()}") from None
        while True:
            reply = self._receive(time.monotonic() + timeout, method)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict:
        """The first event `method` (received already or next)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._receive(deadline, method))

    def _receive(self, deadline: float, waiting_for: str) -> dict:

        while b"\0" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.reader], [], [], left)[0]:
                raise BrowserError(f"Chromium did not answer {waiting_for} in time")
            chunk = os.read(self.reader, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self._stderr_tail()}")
            self.pending += chunk
        message, _, self.pending = self.pending.partition(b"\0")
        return json.loads(message)

    def _stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    def check(self, url: str, timeout: float) -> PageCheck:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        self.events.clear()
        navigated = self.send("Page.navigate", {"url": url}, session)
        if navigated.get("errorText"):
            raise BrowserError(f"{url} did not load: {navigated['errorText']}")
        self.wait_for("Page.loadEventFired", timeout)
        images = self._evaluate(session, _IMAGES_JS)
        text = self._evaluate(session, "document.body ? document.body.innerText : ''")
        height = self._evaluate(session, "Math.ceil(document.documentElement.scrollHeight)")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": int(height), "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session, timeout)

        return PageCheck(
            url=url,
            text=text,
            console_errors=_console_errors(self.events),
            broken_images=[
                f"{alt!r} ({src}): {error or 'naturalWidth 0'}" for alt, src, ok, _, error in images if not ok
            ],
            images=len(images),
            screenshot=base64.b64decode(shot["data"]),
        )

    def _evaluate(self, session: str, expression: str):
        reply = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                          session)  # fmt: skip
        if "exceptionDetails" in reply:
            raise BrowserError(f"evaluating {expression[:40]!r}: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")


def _above(fd: int, lowest: int) -> int:
    """`fd` moved to a descriptor number of at least `lowest`, not inherited by child processes."""
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


def _console_errors(events: list[dict]) -> list[str]:
    """The errors a page's console would show: console.error/assert calls, uncaught exceptions, and the browser's
    own error entries (a resource that failed to load, a refused request)."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return errors
