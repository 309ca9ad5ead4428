"""Versioned publishing behind a `CURRENT` pointer, and a lock for chains of jobs (local disk or gs://).

A published root holds version directories and one small JSON object, `CURRENT`, naming the live version
and the previously live ones (newest first). Readers look only through `CURRENT`, so a version directory
being written, or one that failed its checks, is never seen. Swapping `CURRENT` is a compare-and-swap:
- on GCS, a write with `if_generation_match` (0 when there is no `CURRENT` yet), so of two publishers that
  read the same `CURRENT` exactly one wins and the other gets `PublishConflict`. The client retries a write
  whose response was lost; when the retry is refused (412) because the first attempt did land, `CURRENT`
  holds exactly what we wrote, and that counts as success;
- on local disk, a temporary file renamed over `CURRENT` with `os.replace`, the check-and-rename done under
  an `fcntl` lock so the same holds between processes on one machine.
Publishing keeps the last N versions and deletes the rest; `rollback` makes the previous version live again.

`acquire_lock` / `release_lock` guard a whole run (the nightly chain): a create-only object on GCS
(`if_generation_match=0`) or, locally, a file written in full under a temporary name and then hard-linked to
the lock's name (the link fails if the lock exists), so a lock is never seen empty or half-written. It holds
who took it (owner, host, pid) and when. A local lock whose holder was on this host and whose process is
gone (killed, crashed) is taken over at once; any lock older than `stale_after_s` is taken over too (the
only rule for locks on GCS or from other hosts, whose process this machine cannot see). A lock file that
cannot be read (empty, as an older version of this code could leave it when killed mid-create, or not
written by `acquire_lock`) names no holder, so it is taken over only by the age rule, its age being its
modification time (local) or its `updated` time (GCS); without `stale_after_s` it stays until deleted.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from typing import Iterator, Optional

from pipelines import storage
from pipelines.contracts import INDEX_CURRENT_FILE

log = logging.getLogger(__name__)

POINTER_FILE = INDEX_CURRENT_FILE


class PublishConflict(RuntimeError):
    """`CURRENT` changed between reading it and swapping it: another publisher won; nothing was published."""


class LockHeld(RuntimeError):
    """The lock is taken; `.info` says by whom and since when."""

    def __init__(self, uri: str, info: Optional["LockInfo"], age_s: Optional[float] = None):
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


# --- versions and the CURRENT pointer ---------------------------------------------------------------------
@dataclass(frozen=True)
class Pointer:
    version: str
    history: tuple[str, ...]  # previously live versions, newest first: what rollback goes back to
    retired: tuple[str, ...]  # versions rolled back from; deleted at the next publish
    serial: int  # publishes and rollbacks so far
    published_at: str
    generation: int  # compare-and-swap token: the GCS object generation, or the serial locally; 0: none yet

    def to_json(self) -> dict:
        return {"version": self.version, "history": list(self.history), "retired": list(self.retired),
                "serial": self.serial, "published_at": self.published_at}


def new_version() -> str:
    """A fresh version name that sorts by creation time: `20250102T030405Z-1a2b3c`."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def version_uri(root: str, version: str) -> str:
    return storage.join(root, version)


def read_current(root: str) -> Optional[Pointer]:
    """The live version of `root` and its history, or None when nothing was published yet."""
    found = _read_pointer(storage.join(root, POINTER_FILE))
    if found is None:
        return None
    data, generation = found
    return Pointer(version=data["version"], history=tuple(data.get("history", ())),
                   retired=tuple(data.get("retired", ())), serial=int(data.get("serial", 0)),
                   published_at=data.get("published_at", ""), generation=generation)


def current_version_uri(root: str) -> str:
    pointer = read_current(root)
    if pointer is None:
        raise FileNotFoundError(f"{storage.join(root, POINTER_FILE)} does not exist: nothing is published there")
    return version_uri(root, pointer.version)


def publish(root: str, version: str, keep: int = 3, expected_generation: Optional[int] = None,
            required_file: Optional[str] = None) -> Pointer:
    """Makes `version` (a directory under `root`) live, keeping it and the `keep - 1` previous versions.

    `expected_generation`: publish only if `CURRENT` is still the one with this generation (0: none yet);
    None: whatever is live now. `required_file`: a file that must exist in the version directory (its
    completion marker). Raises `PublishConflict` when another publisher swapped `CURRENT` first.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    if required_file and not storage.exists(storage.join(version_uri(root, version), required_file)):
        raise FileNotFoundError(f"{version_uri(root, version)} has no {required_file}: not a complete version")
    old = read_current(root)
    _check_expected(root, old, expected_generation)
    history = (old.version, *old.history) if old else ()
    if version in history:
        raise ValueError(f"version {version} was already published under {root}")
    new = Pointer(version=version, history=history[:keep - 1], retired=(), serial=(old.serial + 1) if old else 1,
                  published_at=_now(), generation=0)
    new = _swap(root, new, old.generation if old else 0)
    if old:
        _delete_versions(root, {old.version, *old.history, *old.retired} - {new.version, *new.history})
    return new


def rollback(root: str, expected_generation: Optional[int] = None) -> Pointer:
    """Makes the previously live version live again; the current one is retired (deleted at the next publish)."""
    old = read_current(root)
    if old is None:
        raise FileNotFoundError(f"nothing is published under {root}: no {POINTER_FILE}")
    _check_expected(root, old, expected_generation)
    if not old.history:
        raise ValueError(f"{root}: version {old.version} has no previous version to roll back to")
    new = Pointer(version=old.history[0], history=old.history[1:], retired=(old.version, *old.retired),
                  serial=old.serial + 1, published_at=_now(), generation=0)
    return _swap(root, new, old.generation)


def _check_expected(root: str, old: Optional[Pointer], expected_generation: Optional[int]) -> None:
    found = old.generation if old else 0
    if expected_generation is not None and expected_generation != found:
        raise PublishConflict(f"{root}/{POINTER_FILE} changed (generation {found}, expected "
                              f"{expected_generation}): another publisher got there first")


def _swap(root: str, new: Pointer, expected_generation: int) -> Pointer:
    uri = storage.join(root, POINTER_FILE)
    data = json.dumps(new.to_json(), indent=2).encode("utf-8")
    generation = (_gcs_swap(uri, data, expected_generation) if storage.is_gcs(uri)
                  else _local_swap(uri, data, expected_generation, new.serial))
    log.info("published %s: %s is live (previous: %s)", root, new.version, ", ".join(new.history) or "none")
    return replace(new, generation=generation)


def discard_version(root: str, version: str) -> bool:
    """Deletes a version directory whose publish failed, unless `CURRENT` names it (live, or in the history
    rollback goes back to): a publish can land even though it reported an error. True if it was deleted."""
    pointer = read_current(root)
    if pointer is not None and version in (pointer.version, *pointer.history):
        log.warning("not deleting %s: %s names it (version %s, history %s)", version_uri(root, version),
                    POINTER_FILE, pointer.version, ", ".join(pointer.history) or "none")
        return False
    delete_version(root, version)
    return True


def delete_version(root: str, version: str) -> None:
    """Deletes a version directory (one that is not live: a failed build, or one that fell out of history)."""
    uri = version_uri(root, version)
    if not storage.is_gcs(uri):
        storage.delete_tree(uri)
        return
    from google.cloud import storage as gcs

    bucket_name, _, prefix = uri[len("gs://"):].partition("/")
    for blob in list(gcs.Client().list_blobs(bucket_name, prefix=prefix.rstrip("/") + "/")):
        blob.delete()


def _delete_versions(root: str, versions: set[str]) -> None:
    for version in sorted(versions):
        try:
            delete_version(root, version)
        except Exception as err:  # the swap succeeded; a leftover old version is only wasted space
            log.warning("could not delete old version %s: %s", version_uri(root, version), err)


def _read_pointer(uri: str) -> Optional[tuple[dict, int]]:
    if storage.is_gcs(uri):
        blob = _gcs_blob(uri, get=True)
        if blob is None:
            return None
        return json.loads(blob.download_as_bytes(if_generation_match=blob.generation)), blob.generation
    if not os.path.exists(uri):
        return None
    with open(uri, "rb") as handle:
        data = json.load(handle)
    return data, int(data.get("serial", 0))


def _local_swap(path: str, data: bytes, expected_generation: int, serial: int) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with _local_mutex(path + ".swap-lock"):
        found = _read_pointer(path)
        if (found[1] if found else 0) != expected_generation:
            raise PublishConflict(f"{path} changed while publishing: another publisher got there first")
        temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_directory(os.path.dirname(os.path.abspath(path)))
    return serial


@contextlib.contextmanager
def _local_mutex(path: str) -> Iterator[None]:
    # fcntl locks are released by the kernel when their holder dies, so this one can never go stale.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gcs_swap(uri: str, data: bytes, expected_generation: int) -> int:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = _gcs_blob(uri)
    try:
        blob.upload_from_string(data, content_type="application/json", if_generation_match=expected_generation)
    except PreconditionFailed as err:
        # The client retries a write whose response was lost, with the same precondition: if the first
        # attempt landed, the retry is refused. `CURRENT` then holds exactly our bytes (a new serial, our
        # version, our timestamp): that is our swap, not another publisher's.
        try:
            found = _read_pointer(uri)
        except (NotFound, PreconditionFailed):  # changed again while we looked: certainly not ours now
            found = None
        if found is not None and found[0] == json.loads(data):
            log.info("%s: the swap landed although the write reported 412 (a retried request)", uri)
            return found[1]
        raise PublishConflict(f"{uri} changed while publishing: another publisher got there first") from err
    return blob.generation


def _gcs_blob(uri: str, get: bool = False):
    """A google-cloud-storage blob for `uri` (honours STORAGE_EMULATOR_HOST); with get=True, None if absent."""
    from google.cloud import storage as gcs

    bucket_name, _, name = uri[len("gs://"):].partition("/")
    bucket = gcs.Client().bucket(bucket_name)
    return bucket.get_blob(name) if get else bucket.blob(name)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --- locks ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    acquired_at: str  # ISO 8601, UTC
    token: str = ""  # unique per acquisition: tells this holder's lock from a later one at the same path

    @property
    def age_s(self) -> float:
        return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(self.acquired_at)).total_seconds()


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
    info = LockInfo(owner=owner, host=socket.gethostname(), pid=os.getpid(), acquired_at=_now(),
                    token=uuid.uuid4().hex)
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
    if not remove(lock.uri, lock.claim):
        raise LockLost(f"lock {lock.uri} is no longer held by {lock.info.owner!r}: it was taken over or deleted")


def read_lock(uri: str) -> Optional[LockInfo]:
    """Who holds the lock at `uri` (None: nobody)."""
    held = (_gcs_read_lock if storage.is_gcs(uri) else _local_read_lock)(uri)
    return held[0] if held else None


@contextlib.contextmanager
def held_lock(uri: str, owner: str, stale_after_s: Optional[float] = None) -> Iterator[Lock]:
    lock = acquire_lock(uri, owner, stale_after_s)
    try:
        yield lock
    finally:
        release_lock(lock)


def _encode(info: LockInfo) -> bytes:
    return json.dumps(info.__dict__, sort_keys=True).encode("utf-8")


def _decode(data: bytes) -> Optional[LockInfo]:
    try:
        return LockInfo(**json.loads(data))
    except (ValueError, TypeError):
        return None  # empty (left by an older, non-atomic create) or not one of ours: see `_takeover_reason`


def _gcs_create(uri: str, info: LockInfo) -> Optional[int]:
    from google.api_core.exceptions import PreconditionFailed

    blob = _gcs_blob(uri)
    try:
        blob.upload_from_string(_encode(info), content_type="application/json", if_generation_match=0)
    except PreconditionFailed:
        return None
    return blob.generation


def _gcs_read_lock(uri: str) -> Optional[tuple[Optional[LockInfo], int, float]]:
    """(holder, or None if unreadable; generation; seconds since the object was written), or None: no lock."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = _gcs_blob(uri, get=True)
    if blob is None:
        return None
    try:
        data = blob.download_as_bytes(if_generation_match=blob.generation)
    except (NotFound, PreconditionFailed):
        return None
    age_s = (dt.datetime.now(dt.timezone.utc) - blob.updated).total_seconds() if blob.updated else 0.0
    return _decode(data), blob.generation, age_s


def _gcs_remove(uri: str, generation: int) -> bool:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    current = _gcs_blob(uri, get=True)
    if current is None or current.generation != generation:
        return False  # GCS would refuse the delete below too; fake-gcs-server ignores that precondition
    try:
        _gcs_blob(uri).delete(if_generation_match=generation)
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
