"""A lock for a chain of jobs (the nightly run), on local disk or gs://.

`acquire_lock` / `release_lock` guard a whole run (the nightly chain): a create-only object on GCS
(`if_generation_match=0`) or, locally, a file written in full under a temporary name and then hard-linked to
the lock's name (the link fails if the lock exists), so a lock is never seen empty or half-written. It holds
who took it (owner, host, pid) and when. A local lock whose holder was on this host and whose process is
gone (killed, crashed) is taken over at once; any lock older than `stale_after_s` is taken over too (the
only rule for locks on GCS or from other hosts, whose process this machine cannot see). A lock file that
cannot be read (empty, as an older version of this code could leave it when killed mid-create, or not
written by `acquire_lock`) names no holder, so it is taken over only by the age rule, its age being its
modification time (local) or its `updated` time (GCS); without `stale_after_s` it stays until deleted.

Fencing. A lock's age is the time since it was last *renewed*: `Heartbeat` renews it from a thread while its run
is alive (GCS: the object rewritten with `if_generation_match` its current generation, so the token — the lock
object's generation — moves on with each renewal; locally: the lock file rewritten with the same token), so a
live run is never taken over however long it runs. `Heartbeat.fenced()` is what a publisher holds around its
`CURRENT` swap: it refuses (`LockLost`) unless the lock still carries this holder's latest token and the last
renewal is younger than `stale_after_s` minus one heartbeat interval (the lease: a taker needs `stale_after_s`
without a renewal, so the two never overlap while clocks agree to within an interval). Locally every change to
a lock (create, take over, renew, release) and the fenced block itself run under one `flock` on the lock's
directory, so there the fence is exact.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Optional

from pipelines.common import storage

log = logging.getLogger(__name__)


class LockHeld(RuntimeError):
    """The lock is taken; `.info` says by whom and since when."""

    def __init__(self, uri: str, info: Optional[LockInfo], age_s: Optional[float] = None):
        self.uri, self.info = uri, info
        if info:
            holder = (f"owner {info.owner!r} (host {info.host}, pid {info.pid}) since {info.acquired_at}, "
                      f"{info.age_s:.0f} s ago")
        else:
            holder = "an unknown holder (the lock file cannot be read" + (
                f"; last written {age_s:.0f} s ago)" if age_s is not None else ")")
        super().__init__(f"lock {uri} is held by {holder}; if that run is dead, delete the lock or retry "
                         "with a stale_after_s shorter than its age")


class LockLost(RuntimeError):
    """Releasing a lock that is no longer ours (it was taken over as stale, or deleted)."""


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    acquired_at: str  # ISO 8601, UTC
    token: str = ""  # unique per acquisition: tells this holder's lock from a later one at the same path
    renewed_at: str = ""  # ISO 8601, UTC: the last heartbeat ("" none yet)

    @property
    def age_s(self) -> float:
        """Seconds since the lock was taken or last renewed, whichever is later: what staleness is judged by."""
        last = self.renewed_at or self.acquired_at
        return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(last)).total_seconds()


@dataclass(frozen=True)
class Lock:
    uri: str
    info: LockInfo
    claim: int | str  # what release checks is still there: the GCS object generation, or the token locally


def acquire_lock(uri: str, owner: str, stale_after_s: Optional[float] = None) -> Lock:
    """Takes the lock at `uri` for `owner`, or raises `LockHeld` naming the holder and the lock's age.

    A local lock taken on this host by a process that no longer exists is taken over; with `stale_after_s`,
    so is any lock older than that (its holder's `release_lock` then raises `LockLost`). The takeover is
    itself conditional, so two callers cannot both take over one lock.
    """
    info = LockInfo(owner=owner, host=socket.gethostname(), pid=os.getpid(), acquired_at=storage.utc_now(),
                    token=uuid.uuid4().hex)
    with _guard(uri):
        return _acquire(uri, info, stale_after_s)


def _acquire(uri: str, info: LockInfo, stale_after_s: Optional[float]) -> Lock:
    create, read, remove = ((_gcs_create, _gcs_read_lock, _gcs_remove) if storage.is_gcs(uri)
                            else (_local_create, _local_read_lock, _local_remove))
    claim = create(uri, info)
    if claim is not None:
        return Lock(uri, info, claim)
    held = read(uri)
    if held is None:  # released between our attempt and our look: try once more
        claim = create(uri, info)
    elif reason := _takeover_reason(uri, held[0], held[2], stale_after_s):
        log.warning("taking over lock %s from %s: %s", uri, held[0].owner if held[0] else "an unknown holder",
                    reason)
        if remove(uri, held[1]):
            claim = create(uri, info)
    if claim is None:
        held = read(uri)
        raise LockHeld(uri, held[0] if held else None, held[2] if held else None)
    return Lock(uri, info, claim)


def _takeover_reason(uri: str, held: Optional[LockInfo], file_age_s: float,
                     stale_after_s: Optional[float]) -> Optional[str]:
    """Why the lock `held` may be taken over, or None while its holder may still be working.

    `held` is None for a lock file that cannot be read: it names no process, so only its age (`file_age_s`,
    since the file was last written) can free it."""
    if held is None:
        if stale_after_s is not None and file_age_s >= stale_after_s:
            return (f"it cannot be read and is stale (last written {file_age_s:.0f} s ago, "
                    f"limit {stale_after_s:.0f} s)")
        return None
    if not storage.is_gcs(uri) and held.host == socket.gethostname() and not _process_exists(held.pid):
        return f"its process {held.pid} on this host is gone (killed or crashed)"
    if stale_after_s is not None and held.age_s >= stale_after_s:
        return f"it is stale (age {held.age_s:.0f} s, limit {stale_after_s:.0f} s)"
    return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    return True


def release_lock(lock: Lock) -> None:
    """Releases a lock taken by `acquire_lock`; raises `LockLost` if it is no longer ours."""
    remove = _gcs_remove if storage.is_gcs(lock.uri) else _local_remove
    with _guard(lock.uri):
        removed = remove(lock.uri, lock.claim)
    if not removed:
        raise LockLost(f"lock {lock.uri} is no longer held by {lock.info.owner!r}: it was taken over or deleted")


def renew_lock(lock: Lock) -> Lock:
    """Renews `lock` (a heartbeat): rewrites it with `renewed_at` now, only if it still carries `lock.claim`;
    returns the renewed lock (on GCS its claim is the new generation). Raises `LockLost` if it is not ours."""
    info = replace(lock.info, renewed_at=storage.utc_now())
    if storage.is_gcs(lock.uri):
        return Lock(lock.uri, info, _gcs_rewrite(lock.uri, info, lock.claim))
    with _guard(lock.uri):
        held = _local_read_lock(lock.uri)
        if held is None or held[1] != lock.claim:
            raise _lost(lock)
        _local_rewrite(lock.uri, info)
    return Lock(lock.uri, info, lock.claim)


def check_held(lock: Lock) -> None:
    """Raises `LockLost` unless the lock at `lock.uri` still carries `lock.claim` (this holder's latest token)."""
    if storage.is_gcs(lock.uri):
        blob = storage.gcs_blob(lock.uri, get=True)
        found = blob.generation if blob is not None else None
    else:
        held = _local_read_lock(lock.uri)
        found = held[1] if held else None
    if found != lock.claim:
        raise _lost(lock)


def _lost(lock: Lock) -> LockLost:
    return LockLost(f"lock {lock.uri} is no longer held by {lock.info.owner!r}: it was taken over or deleted")


class Heartbeat:
    """Renews a held lock every `interval_s` from a daemon thread while the run is alive; a context manager
    (started on entry, stopped on exit). `fenced()` guards a publish: see the module's docstring."""

    def __init__(self, lock: Lock, interval_s: float, stale_after_s: Optional[float] = None):
        if stale_after_s is not None and not 0 < interval_s <= stale_after_s / 2:
            raise ValueError(f"a heartbeat every {interval_s} s cannot keep a lock that goes stale after "
                             f"{stale_after_s} s fresh: renew at least twice per stale period")
        self.interval_s, self.stale_after_s = interval_s, stale_after_s
        self._lock, self._renewed, self._lost = lock, time.monotonic(), None
        self._mutex, self._stop = threading.RLock(), threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def lock(self) -> Lock:
        with self._mutex:
            return self._lock

    def beat(self) -> None:
        """Renews the lock once, now; raises `LockLost` (and stays lost) if it was taken over."""
        with self._mutex:
            if self._lost:
                raise LockLost(self._lost)
            sent = time.monotonic()
            try:
                self._lock = renew_lock(self._lock)
            except LockLost as err:
                self._lost = str(err)
                raise
            self._renewed = sent

    def lease_left_s(self) -> Optional[float]:
        """Seconds this holder may still act on its last renewal (None: no stale rule, no lease)."""
        if self.stale_after_s is None:
            return None
        with self._mutex:
            return self.stale_after_s - self.interval_s - (time.monotonic() - self._renewed)

    @contextlib.contextmanager
    def fenced(self) -> Iterator[Lock]:
        """Holds off renewals (and, locally, every other change to the lock) while the block runs; refuses with
        `LockLost` unless this holder still has the lock and its lease."""
        with self._mutex, _guard(self._lock.uri):
            if self._lost:
                raise LockLost(self._lost)
            left = self.lease_left_s()
            if left is not None and left <= 0:
                raise LockLost(f"lock {self._lock.uri}: {self._lock.info.owner!r} has not renewed it for "
                               f"{time.monotonic() - self._renewed:.0f} s; it may be taken over: not publishing")
            check_held(self._lock)
            yield self._lock

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except LockLost as err:
                log.error("%s: this run can no longer publish", err)
                return
            except Exception as err:  # noqa: BLE001 — a transient storage error: the lease runs out if it lasts
                log.warning("could not renew lock %s: %s", self._lock.uri, err)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self._lock.uri}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_lock(uri: str) -> Optional[LockInfo]:
    """Who holds the lock at `uri` (None: nobody)."""
    held = (_gcs_read_lock if storage.is_gcs(uri) else _local_read_lock)(uri)
    return held[0] if held else None


def live_holder(uri: str, stale_after_s: Optional[float] = None) -> Optional[LockInfo]:
    """Who holds the lock at `uri` while its holder may still be working, judged by the rule `acquire_lock`
    takes locks over by; None when there is no lock or it could be taken over. A live lock that cannot be
    read comes back as a `LockInfo` with an empty owner (it names no run)."""
    held = (_gcs_read_lock if storage.is_gcs(uri) else _local_read_lock)(uri)
    if held is None or _takeover_reason(uri, held[0], held[2], stale_after_s):
        return None
    return held[0] or LockInfo(owner="", host="", pid=0, acquired_at="")


def _encode(info: LockInfo) -> bytes:
    return json.dumps(info.__dict__, sort_keys=True).encode("utf-8")


def _decode(data: bytes) -> Optional[LockInfo]:
    try:
        return LockInfo(**json.loads(data))
    except (ValueError, TypeError):
        return None  # empty (left by an older, non-atomic create) or not one of ours: see `_takeover_reason`


def _gcs_create(uri: str, info: LockInfo) -> Optional[int]:
    from google.api_core.exceptions import PreconditionFailed

    blob = storage.gcs_blob(uri)
    try:
        blob.upload_from_string(_encode(info), content_type="application/json", if_generation_match=0)
    except PreconditionFailed:
        return None
    return blob.generation


def _gcs_rewrite(uri: str, info: LockInfo, generation: int) -> int:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = storage.gcs_blob(uri)
    try:
        blob.upload_from_string(_encode(info), content_type="application/json", if_generation_match=generation)
    except (NotFound, PreconditionFailed):
        raise LockLost(f"lock {uri} is no longer held by {info.owner!r}: it was taken over or deleted") from None
    return blob.generation


def _gcs_read_lock(uri: str) -> Optional[tuple[Optional[LockInfo], int, float]]:
    """(holder, or None if unreadable; generation; seconds since the object was written), or None: no lock."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = storage.gcs_blob(uri, get=True)
    if blob is None:
        return None
    try:
        data = blob.download_as_bytes(if_generation_match=blob.generation)
    except (NotFound, PreconditionFailed):
        return None
    age_s = (dt.datetime.now(dt.UTC) - blob.updated).total_seconds() if blob.updated else 0.0
    return _decode(data), blob.generation, age_s


def _gcs_remove(uri: str, generation: int) -> bool:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    current = storage.gcs_blob(uri, get=True)
    if current is None or current.generation != generation:
        return False  # GCS would refuse the delete below too; fake-gcs-server ignores that precondition
    try:
        storage.gcs_blob(uri).delete(if_generation_match=generation)
    except (NotFound, PreconditionFailed):
        return False
    return True


def _local_create(path: str, info: LockInfo) -> Optional[str]:
    """Writes the lock in full under a temporary name, then links it to `path` (which fails if `path` exists):
    the lock appears complete or not at all, so a process killed here never leaves an empty lock."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.new-{uuid.uuid4().hex[:12]}"
    try:
        with open(temporary, "xb") as handle:
            handle.write(_encode(info))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
    return info.token


@contextlib.contextmanager
def _guard(uri: str) -> Iterator[None]:
    """Locally: an exclusive `flock` on the lock's directory, held by every change to a lock (the kernel drops
    it when its holder dies, so it never goes stale). On GCS: nothing (preconditions do that work)."""
    if storage.is_gcs(uri):
        yield
        return
    directory = os.path.dirname(os.path.abspath(uri))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _local_rewrite(path: str, info: LockInfo) -> None:
    temporary = f"{path}.new-{uuid.uuid4().hex[:12]}"
    with open(temporary, "xb") as handle:
        handle.write(_encode(info))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _local_read_lock(path: str) -> Optional[tuple[Optional[LockInfo], str, float]]:
    """(holder, or None if unreadable; its token, "" if unreadable; seconds since the file was written), or
    None: no lock."""
    try:
        with open(path, "rb") as handle:
            info = _decode(handle.read())
            age_s = time.time() - os.fstat(handle.fileno()).st_mtime
    except FileNotFoundError:
        return None
    return info, info.token if info else "", age_s


def _local_remove(path: str, token: str) -> bool:
    """Removes the lock file if it still holds `token`: moved aside first, so the check is exact."""
    aside = f"{path}.removing-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    found = _local_read_lock(aside)
    if found and found[1] == token:
        os.remove(aside)
        return True
    try:  # we moved someone else's fresh lock: put it back, unless yet another one was taken meanwhile
        os.link(aside, path)
    except FileExistsError:
        pass
    os.remove(aside)
    return False
