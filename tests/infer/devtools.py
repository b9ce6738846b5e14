"""A headless Chromium driven over the DevTools protocol (websocket-client), for the page test: open
a URL, run JavaScript, type into a field, wait for a condition, take a screenshot. Every wait is
bounded; the browser is killed on exit."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class Browser:
    def __init__(self, binary: str, tmp: Path):
        self.binary, self.tmp = binary, tmp
        self.ids = itertools.count(1)

    def __enter__(self) -> Browser:
        import websocket

        self.proc = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.tmp / 'chromium-profile'}", "--window-size=1280,800", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        port = self._devtools_port()
        deadline = time.time() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5))
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (OSError, StopIteration):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def _devtools_port(self) -> int:
        deadline = time.time() + 30
        for line in self.proc.stderr:
            if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                return int(m.group(1))
            if time.time() > deadline:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def __exit__(self, *_: Any) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are skipped)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, condition: str, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while not self.evaluate(f"Boolean({condition})"):
            if time.time() > deadline:
                raise AssertionError(f"the page never had {condition}")
            time.sleep(0.1)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type ``text`` as key input (Input.insertText: the browser's own typing)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path
