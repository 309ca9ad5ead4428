"""Posters whose catalog URI is http:// or https://: one GET per poster through a shared connection pool.

`fetch_http_poster` turns a URL into bytes plus the validators the server gave (ETag, Last-Modified), or raises
`HttpPosterFailed` with a `RejectReason` code (`http_404`, `http_timeout`, `http_5xx`, …); it never lets a network
error escape. Settings are `config.http` (`HttpConfig`):

- retries (urllib3 `Retry`) on connection errors, timeouts before the headers, 429 and 5xx, with exponential
  backoff, honouring `Retry-After` up to `http.max_retry_after_s`;
- a connect and a read timeout per attempt, and a deadline for the whole download (a server that trickles bytes
  cannot hold a worker);
- at most `http.max_redirects` redirects, each to a location inside the allowed roots (`catalog.allowed_roots`,
  passed in as `roots`; without them, the poster's own scheme and host): a catalog entry that is allowed cannot
  bounce the worker to a host that is not (`poster_outside_roots`);
- `Content-Type` must start with one of `http.content_types` (an error page served as text/html is refused
  before its body is read); at most `http.max_bytes` bytes, refused from
  `Content-Length` when the server declares it, else while streaming;
- conditional requests: given the poster object recorded when the poster was last read, the request carries
  `If-None-Match` / `If-Modified-Since`, and a 304 comes back as `not_modified` with no body downloaded.

One `requests.Session` per process and setting (a pool of `http.concurrency` connections per host) is shared by
the threads that `pipelines.common.posters.FetchPostersDoFn` fetches with.
"""
from __future__ import annotations

import functools
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from pipelines.common.catalog import is_inside
from pipelines.config import HttpConfig
from pipelines.contracts import RejectReason

HTTP_SCHEMES = ("http://", "https://")
RETRIED_STATUSES = (429, 500, 502, 503, 504)
CHUNK_BYTES = 64 * 1024


class HttpPosterFailed(Exception):
    """A poster URL that gave no usable bytes; `reason` is a `RejectReason` code, `detail` says what happened."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class HttpPoster:
    data: bytes | None  # None: the server answered 304 Not Modified to a conditional request
    etag: str | None
    last_modified: str | None  # the header as the server sent it (sent back verbatim as If-Modified-Since)


def is_http(uri: str | None) -> bool:
    return bool(uri) and uri[:8].lower().startswith(HTTP_SCHEMES)


def fetch_http_poster(uri: str, config: HttpConfig, previous: dict | None = None,
                      roots: Sequence[str] | None = None) -> HttpPoster:
    """GET `uri` → `HttpPoster`; `previous` is the poster object recorded last time (its `etag` and
    `last_modified` make the request conditional); a redirect must stay inside `roots` (the catalog's allowed
    roots; None: the scheme and host of `uri`). Raises `HttpPosterFailed` for every failure."""
    headers = conditional_headers(previous)
    started = time.monotonic()
    check = functools.partial(_refuse_redirect_outside, roots=list(roots) if roots is not None else [_origin(uri)])
    try:
        with _session(config).get(uri, headers=headers, stream=True, allow_redirects=True,
                                  timeout=(config.connect_timeout_s, config.read_timeout_s),
                                  hooks={"response": check}) as response:
            return _read_response(response, config, started, bool(headers))
    except HttpPosterFailed:
        raise
    except requests.TooManyRedirects as err:
        raise HttpPosterFailed(RejectReason.HTTP_TOO_MANY_REDIRECTS,
                               f"more than http.max_redirects={config.max_redirects} redirects") from err
    except requests.RequestException as err:
        if _is_timeout(err):
            raise HttpPosterFailed(RejectReason.HTTP_TIMEOUT, f"no answer within http.read_timeout_s="
                                   f"{config.read_timeout_s:g} s / connect_timeout_s={config.connect_timeout_s:g} s"
                                   f"{_attempts(config)}") from err
        if isinstance(err, requests.ConnectionError):
            raise HttpPosterFailed(RejectReason.HTTP_CONNECTION, f"{type(err).__name__}{_attempts(config)}: "
                                   f"{_one_line(err)}") from err
        raise HttpPosterFailed(RejectReason.HTTP_ERROR, f"{type(err).__name__}: {_one_line(err)}") from err


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}/"


def _refuse_redirect_outside(response: requests.Response, *args, roots: list[str], **kwargs) -> None:
    """A `requests` response hook (it sees every hop of a redirect chain): a redirect out of `roots` is refused
    before it is followed."""
    if not response.is_redirect:
        return
    target = urljoin(response.url, response.headers["Location"])
    if not is_inside(target, roots):
        response.close()
        raise HttpPosterFailed(RejectReason.POSTER_OUTSIDE_ROOTS,
                               f"redirected to {target}, outside the allowed roots ({', '.join(roots)}); add its "
                               "location to catalog.allowed_roots to read it")


def conditional_headers(previous: dict | None) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from the validators a previous fetch recorded (none, none)."""
    headers = {}
    if previous and previous.get("etag"):
        headers["If-None-Match"] = previous["etag"]
    if previous and previous.get("last_modified"):
        headers["If-Modified-Since"] = previous["last_modified"]
    return headers


def _read_response(response: requests.Response, config: HttpConfig, started: float, conditional: bool) -> HttpPoster:
    tries = len(response.raw.retries.history) + 1 if getattr(response.raw, "retries", None) else 1
    attempts = f" after {tries} attempts" if tries > 1 else ""
    status = response.status_code
    etag, last_modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    if status == 304 and conditional:
        return HttpPoster(None, etag, last_modified)
    if not 200 <= status < 300:
        raise HttpPosterFailed(_status_reason(status), f"HTTP {status} {response.reason or ''}".strip() + attempts)
    _check_content_type(response.headers.get("Content-Type"), config)
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > config.max_bytes:
        raise HttpPosterFailed(RejectReason.HTTP_TOO_LARGE,
                               f"Content-Length {declared} is more than http.max_bytes={config.max_bytes}")
    return HttpPoster(_body(response, config, started), etag, last_modified)


def _body(response: requests.Response, config: HttpConfig, started: float) -> bytes:
    """The (content-decoded) body, refused past `max_bytes` or past the deadline, whatever the server declared."""
    chunks, size = [], 0
    for chunk in response.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > config.max_bytes:
            raise HttpPosterFailed(RejectReason.HTTP_TOO_LARGE,
                                   f"more than http.max_bytes={config.max_bytes} bytes in the body")
        if time.monotonic() - started > config.total_timeout_s:
            raise HttpPosterFailed(RejectReason.HTTP_TIMEOUT,
                                   f"the download took more than http.total_timeout_s={config.total_timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(content_type: str | None, config: HttpConfig) -> None:
    """A missing Content-Type is let through (the validator reads the bytes); a declared one must be allowed."""
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type.startswith(tuple(config.content_types)):
        raise HttpPosterFailed(RejectReason.HTTP_CONTENT_TYPE, f"Content-Type {media_type!r} is not one of "
                               f"http.content_types ({', '.join(config.content_types)})")


def _status_reason(status: int) -> str:
    if status in (404, 410):
        return RejectReason.HTTP_404
    if status in (401, 403):
        return RejectReason.HTTP_403
    if status == 429:
        return RejectReason.HTTP_429
    if status >= 500:
        return RejectReason.HTTP_5XX
    return RejectReason.HTTP_STATUS


def _is_timeout(err: BaseException) -> bool:
    """Whether a timeout lies anywhere in the chain (requests wraps urllib3's in a ConnectionError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, NewConnectionError):  # a ConnectTimeoutError subclass, though a refusal is no timeout
            return False
        if isinstance(err, (requests.Timeout, ReadTimeoutError, ConnectTimeoutError, socket.timeout, TimeoutError)):
            return True
        reason = getattr(err, "reason", None)
        inner = err.args[0] if err.args and isinstance(err.args[0], BaseException) else None
        err = reason if isinstance(reason, BaseException) else inner or err.__cause__ or err.__context__
    return False


def _attempts(config: HttpConfig) -> str:
    return f" after {config.retries + 1} attempts" if config.retries else ""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def _session(config: HttpConfig) -> requests.Session:
    return _cached_session(config.model_dump_json())


@functools.lru_cache(maxsize=4)
def _cached_session(settings: str) -> requests.Session:
    """One session per process and setting: its pool keeps connections to a CDN open across posters."""
    config = HttpConfig.model_validate_json(settings)
    retry = Retry(total=config.retries, connect=config.retries, read=config.retries, status=config.retries,
                  redirect=None, other=0, allowed_methods=frozenset({"GET"}), status_forcelist=RETRIED_STATUSES,
                  backoff_factor=config.backoff_s, respect_retry_after_header=True,
                  retry_after_max=config.max_retry_after_s, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=config.concurrency)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = config.max_redirects
    session.headers["User-Agent"] = config.user_agent
    return session
