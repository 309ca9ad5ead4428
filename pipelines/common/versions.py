"""Versioned publishing behind a `CURRENT` pointer (local disk or gs://).

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
A publish may carry the run date it was built for (the nightly's `--date`): `CURRENT` records it for the live
version and its history, and a publish for an earlier date than the live version's is refused (`OlderRunDate`)
unless `allow_older`, so re-running an old night cannot silently take a newer index off the air. Rollback is
always allowed.

A swap can be *fenced*: `fence` is a context manager factory (a nightly lock's `locks.Heartbeat.fenced`) entered
around the compare-and-swap, which refuses (`locks.LockLost`) unless the publisher still holds the lock's
current token; then `CURRENT` does not move.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Optional

from pipelines.common import storage
from pipelines.contracts import INDEX_CURRENT_FILE

log = logging.getLogger(__name__)

POINTER_FILE = INDEX_CURRENT_FILE
Fence = Callable[[], AbstractContextManager]  # entered around the swap; raises to refuse it


class PublishConflict(RuntimeError):
    """`CURRENT` changed between reading it and swapping it: another publisher won; nothing was published."""


class OlderRunDate(ValueError):
    """A publish for an earlier run date than the live version's; nothing was published."""


class UnreadablePointer(ValueError):
    """`CURRENT` exists but is not a pointer (empty, truncated, or not ours); the message names it and what to do."""


@dataclass(frozen=True)
class Pointer:
    version: str
    history: tuple[str, ...]  # previously live versions, newest first: what rollback goes back to
    retired: tuple[str, ...]  # versions rolled back from; deleted at the next publish
    serial: int  # publishes and rollbacks so far
    published_at: str
    generation: int  # compare-and-swap token: the GCS object generation, or the serial locally; 0: none yet
    run_dates: tuple[tuple[str, str], ...] = ()  # (version, run date YYYY-MM-DD) of the live and history versions

    @property
    def run_date(self) -> Optional[str]:
        """The run date the live version was published for (None: published without one)."""
        return dict(self.run_dates).get(self.version)

    def to_json(self) -> dict:
        data = {"version": self.version, "history": list(self.history), "retired": list(self.retired),
                "serial": self.serial, "published_at": self.published_at}
        if self.run_dates:
            data["run_date"] = self.run_date
            data["run_dates"] = dict(self.run_dates)
        return data


def new_version() -> str:
    """A fresh version name that sorts by creation time: `20250102T030405Z-1a2b3c`."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


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
                   published_at=data.get("published_at", ""), generation=generation,
                   run_dates=tuple(sorted(data.get("run_dates", {}).items())))


def current_version_uri(root: str) -> str:
    pointer = read_current(root)
    if pointer is None:
        raise FileNotFoundError(f"{storage.join(root, POINTER_FILE)} does not exist: nothing is published there")
    return version_uri(root, pointer.version)


def publish(root: str, version: str, keep: int = 3, expected_generation: Optional[int] = None,
            required_file: Optional[str] = None, run_date: Optional[str] = None,
            allow_older: bool = False, fence: Optional[Fence] = None) -> Pointer:
    """Makes `version` (a directory under `root`) live, keeping it and the `keep - 1` previous versions.

    `expected_generation`: publish only if `CURRENT` is still the one with this generation (0: none yet);
    None: whatever is live now. `required_file`: a file that must exist in the version directory (its
    completion marker). `run_date` (YYYY-MM-DD): the date the version was built for, recorded in `CURRENT`.
    Raises `PublishConflict` when another publisher swapped `CURRENT` first, and `OlderRunDate` when
    `run_date` is earlier than the live version's and not `allow_older`. `fence`: see the module's docstring.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    if required_file and not storage.exists(storage.join(version_uri(root, version), required_file)):
        raise FileNotFoundError(f"{version_uri(root, version)} has no {required_file}: not a complete version")
    old = read_current(root)
    _check_expected(root, old, expected_generation)
    if not allow_older:
        check_run_date(root, old, run_date)
    history = (old.version, *old.history) if old else ()
    if version in history:
        raise ValueError(f"version {version} was already published under {root}")
    dates = {**dict(old.run_dates if old else ()), **({version: run_date} if run_date else {})}
    kept = (version, *history[:keep - 1])
    new = Pointer(version=version, history=history[:keep - 1], retired=(), serial=(old.serial + 1) if old else 1,
                  published_at=storage.utc_now(), generation=0,
                  run_dates=tuple(sorted((v, d) for v, d in dates.items() if v in kept)))
    new = _swap(root, new, old.generation if old else 0, fence)
    if old:
        _delete_versions(root, {old.version, *old.history, *old.retired} - {new.version, *new.history})
    return new


def rollback(root: str, expected_generation: Optional[int] = None, fence: Optional[Fence] = None) -> Pointer:
    """Makes the previously live version live again; the current one is retired (deleted at the next publish)."""
    old = read_current(root)
    if old is None:
        raise FileNotFoundError(f"nothing is published under {root}: no {POINTER_FILE}")
    _check_expected(root, old, expected_generation)
    if not old.history:
        raise ValueError(f"{root}: version {old.version} has no previous version to roll back to")
    kept = old.history
    new = Pointer(version=old.history[0], history=old.history[1:], retired=(old.version, *old.retired),
                  serial=old.serial + 1, published_at=storage.utc_now(), generation=0,
                  run_dates=tuple((v, d) for v, d in old.run_dates if v in kept))
    return _swap(root, new, old.generation, fence)


def check_run_date(root: str, live: Optional[Pointer], run_date: Optional[str]) -> None:
    """Raises `OlderRunDate` when `run_date` is earlier than the run date of the live version under `root`
    (ISO dates compare as strings); a publish without a run date, or over a version without one, passes."""
    if run_date and live is not None and live.run_date and run_date < live.run_date:
        raise OlderRunDate(f"{storage.join(root, POINTER_FILE)}: the live index {live.version} was published for "
                           f"{live.run_date}, later than {run_date}; nothing was published (pass --allow-older to "
                           "replace it with an older night's index, or `posters index rollback` to go back)")


def _check_expected(root: str, old: Optional[Pointer], expected_generation: Optional[int]) -> None:
    found = old.generation if old else 0
    if expected_generation is not None and expected_generation != found:
        raise PublishConflict(f"{root}/{POINTER_FILE} changed (generation {found}, expected "
                              f"{expected_generation}): another publisher got there first")


def _swap(root: str, new: Pointer, expected_generation: int, fence: Optional[Fence] = None) -> Pointer:
    uri = storage.join(root, POINTER_FILE)
    data = json.dumps(new.to_json(), indent=2).encode("utf-8")
    with fence() if fence is not None else contextlib.nullcontext():
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
        except Exception as err:  # noqa: BLE001 — the swap succeeded; a leftover old version is only wasted space
            log.warning("could not delete old version %s: %s", version_uri(root, version), err)


def _read_pointer(uri: str) -> Optional[tuple[dict, int]]:
    if storage.is_gcs(uri):
        blob = storage.gcs_blob(uri, get=True)
        if blob is None:
            return None
        return _parse_pointer(uri, blob.download_as_bytes(if_generation_match=blob.generation)), blob.generation
    if not os.path.exists(uri):
        return None
    with open(uri, "rb") as handle:
        data = _parse_pointer(uri, handle.read())
    return data, int(data.get("serial", 0))


def _parse_pointer(uri: str, raw: bytes) -> dict:
    """`CURRENT`'s bytes → its object; anything else is an `UnreadablePointer` naming the file and the fix."""
    problem = "is empty" if not raw.strip() else None
    if problem is None:
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and isinstance(data.get("version"), str):
                return data
            problem = "names no version"
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            problem = f"is not valid JSON ({err})"
    root = uri.rsplit("/", 1)[0]
    raise UnreadablePointer(f"{uri} {problem}: it must name the live index version; write "
                            f'{{"version": "<a version directory under {root}>"}} into it, or delete it and '
                            "publish again with `posters index`")


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

    blob = storage.gcs_blob(uri)
    try:
        blob.upload_from_string(data, content_type="application/json", if_generation_match=expected_generation)
    except PreconditionFailed as err:
        # The client retries a write whose response was lost, with the same precondition: if the first
        # attempt landed, the retry is refused. `CURRENT` then holds exactly our bytes (a new serial, our
        # version, our timestamp): that is our swap, not another publisher's.
        try:
            found = _read_pointer(uri)
        except (NotFound, PreconditionFailed, UnreadablePointer):  # changed again while we looked: not ours
            found = None
        if found is not None and found[0] == json.loads(data):
            log.info("%s: the swap landed although the write reported 412 (a retried request)", uri)
            return found[1]
        raise PublishConflict(f"{uri} changed while publishing: another publisher got there first") from err
    return blob.generation
