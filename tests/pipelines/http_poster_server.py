"""A local HTTP poster server for tests: `http.server` in a thread on an ephemeral port, one path per behaviour.

    /posters/<name>      200 with the poster `posters[name]`, an ETag (its sha256) and a Last-Modified; answers
                         304 to a matching If-None-Match (or, without one, to an If-Modified-Since not older)
    /dated/<name>        the same with Last-Modified only (no ETag)
    /slow                answers after `slow_s` seconds
    /missing             404;  /forbidden 403
    /flaky/<n>/<name>    500 for the first n requests of that path, then the poster
    /busy/<name>         429 with Retry-After: 1 for the first request of that path, then the poster
    /always-busy         429 with Retry-After: 1, always;  /broken 500, always
    /moved/<name>        302 to /posters/<name>;  /loop 302 to itself
    /away/<name>         302 to http://localhost:<port>/posters/<name>: the same server under another host name
    /page                200 text/html
    /huge                200 declaring Content-Length: `huge_bytes`;  /endless `huge_bytes` with no Content-Length

Every request is logged (`requests`: (path, headers)) and the body bytes sent are counted per path.
"""
from __future__ import annotations

import collections
import hashlib
import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


class PosterServer:
    def __init__(self, posters: dict[str, bytes], slow_s: float = 1.0, huge_bytes: int = 300_000):
        self.posters = dict(posters)
        self.slow_s, self.huge_bytes = slow_s, huge_bytes
        self.requests: list[tuple[str, dict]] = []
        self.body_bytes = collections.Counter()
        self._hits = collections.Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def other_base(self) -> str:
        """This server under another host name (a different root for `catalog.allowed_roots`)."""
        return f"http://localhost:{self._server.server_address[1]}"

    def hits(self, path: str) -> int:
        return sum(1 for seen, _ in self.requests if seen == path)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.body_bytes.clear()
            self._hits.clear()

    def __enter__(self) -> PosterServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, path: str, headers: dict) -> int:
        with self._lock:
            self.requests.append((path, headers))
            self._hits[path] += 1
            return self._hits[path]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up (timed out, refused a body)
        pass


def _handler(server: PosterServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802 — http.server's name
            hit = server._count(self.path, dict(self.headers))
            parts = self.path.strip("/").split("/")
            route = parts[0]
            try:
                self._route(route, parts[1:], hit)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading (a refused body)
                pass

        def _route(self, route: str, rest: list[str], hit: int):
            if route in ("posters", "dated"):
                return self._poster(rest[0], etag=route == "posters")
            if route == "slow":
                time.sleep(server.slow_s)
                return self._poster(next(iter(server.posters)))
            if route == "missing":
                return self._status(404)
            if route == "forbidden":
                return self._status(403)
            if route == "flaky":
                return self._status(500) if hit <= int(rest[0]) else self._poster(rest[1])
            if route == "busy":
                return self._status(429, {"Retry-After": "1"}) if hit == 1 else self._poster(rest[0])
            if route == "always-busy":
                return self._status(429, {"Retry-After": "1"})
            if route == "broken":
                return self._status(500)
            if route == "moved":
                return self._status(302, {"Location": f"/posters/{rest[0]}"})
            if route == "away":
                return self._status(302, {"Location": f"{server.other_base}/posters/{rest[0]}"})
            if route == "loop":
                return self._status(302, {"Location": "/loop"})
            if route == "page":
                return self._send(200, b"<html><body>Not found, sorry</body></html>", "text/html; charset=utf-8")
            if route == "huge":
                return self._send(200, bytes(server.huge_bytes), "image/jpeg")
            if route == "endless":
                return self._send(200, bytes(server.huge_bytes), "image/jpeg", declare_length=False)
            return self._status(404)

        def _poster(self, name: str, etag: bool = True):
            data = server.posters.get(name)
            if data is None:
                return self._status(404)
            tag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            headers = {"Last-Modified": LAST_MODIFIED, **({"ETag": tag} if etag else {})}
            match = self.headers.get("If-None-Match")
            since = self.headers.get("If-Modified-Since")
            if (etag and match == tag) or (match is None and since and
                                           parsedate_to_datetime(since) >= parsedate_to_datetime(LAST_MODIFIED)):
                return self._status(304, headers)
            return self._send(200, data, "image/jpeg", headers)

        def _status(self, status: int, headers: dict | None = None):
            self._send(status, b"", None, headers or {})

        def _send(self, status: int, body: bytes, content_type: str | None, headers: dict | None = None,
                  declare_length: bool = True):
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if declare_length:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if status != 304 and body:
                with server._lock:  # counted before the write: a client that has the body sees it counted
                    server.body_bytes[self.path] += len(body)
                self.wfile.write(body)

    return Handler
