"""Headless Chromium driven over the DevTools protocol: load a page, collect console errors, check its images,
take a screenshot. Installs Chromium from Debian (`apt-get install -y chromium`) when it is missing.

    python -m tests.pipelines.evaluate.browser report.html screenshot.png   # prints the check as JSON
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--window-size=1300,1800", "--hide-scrollbars"]
IMAGES_SCRIPT = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
                 "width: i.naturalWidth, height: i.naturalHeight})))")


def ensure_chromium() -> str:
    """The Chromium binary, installed with apt-get first when absent; raises when the install fails."""
    if not os.path.exists(CHROMIUM):
        install = ["apt-get", "install", "-y", "chromium"]
        if subprocess.run(install, capture_output=True, text=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=900)
            result = subprocess.run(install, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                raise RuntimeError(f"apt-get install chromium failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is still missing after apt-get install chromium")
    return CHROMIUM


class _DevTools:
    """One page's DevTools session: commands by id, events collected as they arrive."""

    def __init__(self, socket):
        self._socket = socket
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.time())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.time() + timeout
        while time.time() < deadline:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.time())))
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(f"no {method} within {timeout} s")


def _page_socket(process: subprocess.Popen, timeout: float = 60) -> str:
    """The DevTools websocket of Chromium's first page (from the port it prints on stderr)."""
    deadline = time.time() + timeout
    port = None
    while time.time() < deadline and port is None:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        port = found and int(found.group(1))
        if not line and process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before listening")
    if port is None:
        raise TimeoutError("chromium did not print its DevTools port")
    import threading
    import urllib.request

    # Keep reading stderr so that a chatty browser never blocks on a full pipe.
    threading.Thread(target=lambda: process.stderr.read(), daemon=True).start()

    while time.time() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            pages = [t for t in json.load(response) if t.get("type") == "page"]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise TimeoutError("chromium has no page target")


def check_page(html_path: str | Path, screenshot_path: str | Path) -> dict:
    """Loads `html_path` in headless Chromium; → {"console_errors", "images", "broken_images", "title"} and the
    full-page screenshot written to `screenshot_path`."""
    binary = ensure_chromium()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        from websockets.sync.client import connect

        with connect(_page_socket(process), max_size=None, open_timeout=30) as socket:
            page = _DevTools(socket)
            for domain in ("Page", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            page.send("Page.navigate", url=Path(html_path).resolve().as_uri())
            page.wait_for("Page.loadEventFired")
            images = json.loads(page.send("Runtime.evaluate", expression=IMAGES_SCRIPT,
                                          returnByValue=True)["result"]["value"])
            title = page.send("Runtime.evaluate", expression="document.title", returnByValue=True)["result"]["value"]
            shot = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, timeout=120)
            Path(screenshot_path).write_bytes(base64.b64decode(shot["data"]))
            errors = [_describe(e) for e in page.events if _is_error(e)]
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)
    return {"title": title, "images": len(images), "console_errors": errors,
            "broken_images": [i for i in images if not i["complete"] or not i["width"]]}


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    return (method == "Runtime.exceptionThrown"
            or (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
            or (method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"))


def _describe(event: dict) -> str:
    params = event.get("params", {})
    if "entry" in params:
        return f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}"
    return json.dumps(params)[:500]


if __name__ == "__main__":
    print(json.dumps(check_page(sys.argv[1], sys.argv[2]), indent=2))
