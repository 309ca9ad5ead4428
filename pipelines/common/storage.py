"""Reading, writing and publishing files by URI (local path or gs://) through Beam's FileSystems.

Outputs are written under a staging prefix and published only when complete: `publish_directory` moves a
finished staging directory into place and writes `_SUCCESS` last, so readers that require `_SUCCESS`
never see a half-written dataset. Every file `write_bytes` writes appears whole or not at all (a temporary
file renamed into place on local disk; a single upload on GCS), so a crash never leaves a truncated
`_SUCCESS`, stage marker or manifest.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.contracts import (
    CANDIDATES_SUMMARY_FILE,
    EMBEDDINGS_MANIFEST_FILE,
    MODEL_META_FILE,
    STATS_FILE,
    SUCCESS_FILE,
)

# Files that describe a directory's data: on GCS they are copied after the data they describe.
METADATA_FILES = (EMBEDDINGS_MANIFEST_FILE, STATS_FILE, CANDIDATES_SUMMARY_FILE, MODEL_META_FILE)


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base.rstrip("/"), *parts) if parts else base


def exists(uri: str) -> bool:
    return FileSystems.exists(uri)


def read_bytes(uri: str) -> bytes:
    with FileSystems.open(uri, compression_type="uncompressed") as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Writes `data` to `uri`, replacing what was there; readers see the old content or the new, never a part.

    GCS uploads are atomic already. On local disk (where Beam's `FileSystems.create` writes in place) the data
    goes to a temporary file in the same directory, is flushed to disk, and is renamed over `uri`; a failure
    or crash before the rename leaves `uri` as it was (a crash may leave a `.<name>.tmp-*` file behind).
    """
    if is_gcs(uri):
        with FileSystems.create(uri, compression_type="uncompressed") as handle:
            handle.write(data)
        return
    _write_local_atomically(os.path.abspath(uri), data)


def _write_local_atomically(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # 0o666: the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8"))


def list_files(prefix_or_dir: str) -> list[str]:
    """Every file under a directory URI (recursively), sorted."""
    pattern = join(prefix_or_dir, "**") if not prefix_or_dir.endswith("*") else prefix_or_dir
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def delete_tree(uri: str) -> None:
    if not is_gcs(uri):
        if os.path.isdir(uri):
            shutil.rmtree(uri)
        elif os.path.exists(uri):
            os.remove(uri)
        return
    delete_objects(list_files(uri))


def delete_objects(uris: Iterable[str]) -> None:
    """Deletes gs:// objects one by one (absent ones are fine). One by one with the google-cloud-storage client,
    not `FileSystems.delete`: its batch request is what fake-gcs-server, our test server, cannot answer."""
    from google.api_core.exceptions import NotFound
    from google.cloud import storage as gcs

    client = None
    for uri in uris:
        client = client or gcs.Client()
        bucket_name, _, name = uri[len("gs://"):].partition("/")
        try:
            client.bucket(bucket_name).blob(name).delete()
        except NotFound:
            pass


def staging_uri(final_uri: str) -> str:
    """A fresh sibling of `final_uri` to write into; `publish_directory` moves it into place."""
    parent, name = final_uri.rstrip("/").rsplit("/", 1) if "/" in final_uri.rstrip("/") else (".", final_uri)
    return join(parent, f".staging-{name}-{uuid.uuid4().hex[:12]}")


def is_complete(directory: str) -> bool:
    """True when `directory` was published whole (its `_SUCCESS` marker exists)."""
    return exists(join(directory, SUCCESS_FILE))


def incomplete_message(directory: str) -> str:
    """What readers say about a directory without `_SUCCESS` (being written, or left by a failed publish)."""
    return f"{directory} is not published completely: no {SUCCESS_FILE}; rerun the stage that writes it"


def publish_directory(staging: str, final: str, summary: dict | None = None) -> None:
    """Moves a finished staging directory to `final`, replacing what was there, `_SUCCESS` written last.

    Local disk: two renames, then the marker: the old directory is renamed aside, the staging directory is
    renamed to `final`, `_SUCCESS` is written (atomically, see `write_bytes`) and the old directory deleted.
    Between the two renames `final` does not exist (readers find nothing, not a mix); if the second rename
    fails, the old directory is renamed back before the error is raised. GCS has no directory
    rename, so the steps are ordered for readers that require `_SUCCESS`: the old `_SUCCESS` is deleted
    first (from then on readers refuse `final`), the data files are copied, then the files that describe
    them (`METADATA_FILES`), then objects of the old output that are not part of the new one are deleted,
    and `_SUCCESS` is written last.
    """
    marker = json.dumps(summary or {}, sort_keys=True, default=str).encode("utf-8")
    if not is_gcs(final):
        final = os.path.abspath(final)
        old = None
        if os.path.exists(final):
            old = f"{final}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(staging, final)
        except BaseException as err:
            if old:  # put the old output back: a failed publish leaves things as they were
                try:
                    os.replace(old, final)
                except OSError as restore_err:
                    err.add_note(f"the previous output is kept at {old}: moving it back failed ({restore_err})")
            raise
        write_bytes(os.path.join(final, SUCCESS_FILE), marker)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return
    final, staging = final.rstrip("/"), staging.rstrip("/")
    delete_objects([join(final, SUCCESS_FILE)])
    names = [src[len(staging) + 1:] for src in list_files(staging)]
    names = [name for name in names if name != SUCCESS_FILE]
    data = [name for name in names if name not in METADATA_FILES]
    metadata = [name for name in names if name in METADATA_FILES]
    for group in (data, metadata):
        if group:
            FileSystems.copy([join(staging, n) for n in group], [join(final, n) for n in group])
    published = {join(final, name) for name in names}
    delete_objects([uri for uri in list_files(final) if uri not in published])
    write_bytes(join(final, SUCCESS_FILE), marker)
    delete_tree(staging)


def gcs_blob(uri: str, get: bool = False):
    """A google-cloud-storage blob for `uri` (honours STORAGE_EMULATOR_HOST); with get=True, None if absent."""
    from google.cloud import storage as gcs

    bucket_name, _, name = uri[len("gs://"):].partition("/")
    bucket = gcs.Client().bucket(bucket_name)
    return bucket.get_blob(name) if get else bucket.blob(name)


class OutputLocationError(ValueError):
    """An output that would overwrite or delete an input, or that names an existing file; nothing was done."""


_GLOB_CHARS = "*?["


def normalized_location(uri: str) -> str:
    """`uri` as an absolute location to compare: gs:// with `..` and trailing slashes resolved, a local path
    made absolute with symlinks resolved (so two spellings of one directory compare equal)."""
    if is_gcs(uri):
        bucket, _, name = uri[len("gs://"):].partition("/")
        name = posixpath.normpath("/" + name).lstrip("/")
        return f"gs://{bucket}/{name}".rstrip("/")
    return os.path.realpath(os.path.abspath(os.path.expanduser(uri)))


def _inside(path: str, parent: str) -> bool:
    """True when `path` is `parent` or lies under it (whole path components, not string prefixes)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _glob_base(uri: str) -> str:
    """The directory above a glob's first wildcard (`gs://b/h/*.csv` → `gs://b/h`)."""
    head = uri[:min(uri.index(c) for c in _GLOB_CHARS if c in uri)]
    return head.rsplit("/", 1)[0] if "/" in head else "."


def check_output_location(out: str, inputs: dict[str, str | None], flag: str = "--out",
                          may_be: tuple[str, ...] = ()) -> None:
    """Refuses an output location before any work starts: one that is, contains or lies inside an input
    (`inputs`: flag or name → URI; None values are skipped; a glob is compared through the directory above
    its wildcard, and only for containing it), or that is an existing file. `may_be` names inputs the output
    may be exactly (read whole before the output is published, like `embed --previous`).

    Publishing replaces the output directory whole, so any of these would delete or overwrite an input (or
    move a file aside). Raises `OutputLocationError` with one line naming both locations.
    """
    target = normalized_location(out)
    if (os.path.isfile(target) if not is_gcs(out) else exists(target)):
        raise OutputLocationError(f"{flag} {out} is an existing file; an output is a directory: choose a new "
                                  "location or delete the file")
    for name, uri in inputs.items():
        relation = _overlap(target, uri) if uri else None
        if relation and not (relation == "is" and name in may_be):
            raise OutputLocationError(f"{flag} {out} {relation} the input {name} {uri}: publishing there would "
                                      "delete or replace that input; choose an output outside every input")


def _overlap(target: str, uri: str) -> str | None:
    """How the normalised output `target` overlaps the input `uri` ("is", "contains", "lies inside"), or None."""
    if any(c in uri for c in _GLOB_CHARS):  # the files it matches: only containing them (or being one) clashes
        if fnmatch.fnmatch(target, normalized_location(uri)):
            return "is matched by"
        return "contains" if _inside(normalized_location(_glob_base(uri)), target) else None
    source = normalized_location(uri)
    if source == target:
        return "is"
    if _inside(source, target):
        return "contains"
    return "lies inside" if _inside(target, source) else None


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
