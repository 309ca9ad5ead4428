"""`posters gc`: removes what killed runs leave behind under a root (local path or gs://).

    posters gc --root URI [--older-than-hours H] [--dry-run]

Two kinds of leftovers, each removed only once nothing in it changed for H hours (default
`retention.older_than_hours`):
- partial index versions: a directory named like a version (`versions.new_version`) beside a `CURRENT` pointer
  that does not name it (live, history or retired): a build killed before its publish, or a version an earlier
  publish failed to delete. Where there is no `CURRENT` yet, only version directories without a manifest go;
- staging directories (`.staging-*`, `storage.staging_uri`) of outputs never published, except those of a run
  that a live nightly lock names (`nightly <date>` holds `runs/<date>/`; a lock that names no date holds
  everything beside it).
Nothing else is touched. A `CURRENT` that cannot be read stops the collection (`versions.UnreadablePointer`):
without it there is no knowing what is live. `posters nightly` runs the same step when a night finishes.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipelines.common import locks, storage, versions
from pipelines.contracts import INDEX_MANIFEST_FILE, NIGHTLY_LOCK_FILE, NIGHTLY_RUNS_DIR

VERSION_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")  # what `versions.new_version` makes
STAGING_PREFIX = ".staging-"
PARTIAL_VERSION, STAGING = "partial version", "staging directory"
LOCK_OWNER_DATE = re.compile(r"nightly (\d{4}-\d{2}-\d{2})")  # the owner `posters nightly` takes its lock as


@dataclass(frozen=True)
class Leftover:
    uri: str
    kind: str  # PARTIAL_VERSION or STAGING
    age_h: float  # hours since anything in it last changed


# --- finding ---------------------------------------------------------------------------------------------------
def list_with_times(root: str) -> dict[str, float]:
    """Every file under `root` (and, on local disk, every directory) → its modification time (epoch seconds)."""
    root = root.rstrip("/")
    if storage.is_gcs(root):
        found = FileSystems.match([storage.join(root, "**")])[0].metadata_list
        # An object without an update time counts as written now: never removed on a guess.
        return {m.path: m.last_updated_in_seconds or time.time() for m in found}
    listed = {}
    for folder, directories, files in os.walk(root):
        for name in directories + files:
            path = os.path.join(folder, name)
            try:
                listed[path] = os.lstat(path).st_mtime
            except FileNotFoundError:  # removed while we looked
                pass
    return listed


def find_leftovers(root: str, older_than_h: float, stale_after_s: Optional[float] = None,
                   own_lock: Optional[locks.Lock] = None, now: Optional[float] = None) -> list[Leftover]:
    """The partial versions and staging directories under `root` older than `older_than_h` hours, sorted.

    `stale_after_s`: a nightly lock older than this is not live (as `locks.acquire_lock` judges it);
    `own_lock`: the caller's own lock, which protects nothing (its run is done). `now`: for tests.
    """
    root = root.rstrip("/")
    listed = list_with_times(root)
    newest: dict[tuple[str, str], float] = {}  # (directory, kind) → newest time of anything in it
    for path, updated in listed.items():
        found = _leftover_dir(root, path)
        if found:
            newest[found] = max(newest.get(found, 0.0), updated)
    named = _named_versions({directory for directory, kind in newest if kind == PARTIAL_VERSION}, listed)
    held = _held_prefixes(root, listed, stale_after_s, own_lock)
    now = time.time() if now is None else now
    leftovers = []
    for (directory, kind), updated in sorted(newest.items()):
        age_h = (now - updated) / 3600
        if age_h < older_than_h or directory in named:
            continue
        if kind == STAGING and any(_inside(directory, prefix) for prefix in held):
            continue
        leftovers.append(Leftover(directory, kind, round(age_h, 2)))
    return leftovers


def _leftover_dir(root: str, path: str) -> Optional[tuple[str, str]]:
    """The leftover directory `path` lies in (or is), as (directory, kind), or None."""
    parts = path[len(root) + 1:].split("/") if path.startswith(root + "/") else []
    for depth, part in enumerate(parts):
        if part.startswith(STAGING_PREFIX):
            return "/".join([root, *parts[:depth + 1]]), STAGING
        # Named like a version and a directory: something lies in it (GCS lists only files), or local disk says so.
        if VERSION_NAME.fullmatch(part) and (depth < len(parts) - 1 or os.path.isdir(path)):
            return "/".join([root, *parts[:depth + 1]]), PARTIAL_VERSION
    return None


def _named_versions(version_dirs: Iterable[str], listed: dict[str, float]) -> set[str]:
    """The version directories among `version_dirs` that must stay: named by their `CURRENT` (live, history,
    retired), or complete (a manifest) beside no `CURRENT` at all."""
    keep = set()
    by_parent: dict[str, list[str]] = {}
    for directory in version_dirs:
        by_parent.setdefault(directory.rsplit("/", 1)[0], []).append(directory)
    for parent, directories in by_parent.items():
        pointer = versions.read_current(parent)  # UnreadablePointer stops everything: what is live is unknown
        if pointer is not None:
            names = {pointer.version, *pointer.history, *pointer.retired}
            keep.update(d for d in directories if d.rsplit("/", 1)[1] in names)
        else:
            keep.update(d for d in directories if storage.join(d, INDEX_MANIFEST_FILE) in listed)
    return keep


def _held_prefixes(root: str, listed: dict[str, float], stale_after_s: Optional[float],
                   own_lock: Optional[locks.Lock]) -> list[str]:
    """Where live nightly locks under `root` (or at it) hold their runs' staging directories."""
    held = []
    for uri in sorted(path for path in listed if path.rsplit("/", 1)[-1] == NIGHTLY_LOCK_FILE):
        holder = locks.live_holder(uri, stale_after_s)
        if holder is None or (own_lock is not None and holder.token and holder.token == own_lock.info.token):
            continue
        base = uri.rsplit("/", 1)[0]
        date = LOCK_OWNER_DATE.fullmatch(holder.owner or "")
        held.append(storage.join(base, NIGHTLY_RUNS_DIR, date.group(1)) if date else base)
    return held


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


# --- removing --------------------------------------------------------------------------------------------------
def collect_garbage(root: str, older_than_h: float, dry_run: bool = False, stale_after_s: Optional[float] = None,
                    own_lock: Optional[locks.Lock] = None, now: Optional[float] = None) -> dict:
    """Finds the leftovers under `root` and (unless `dry_run`) removes them; returns what it found and did:
    {"root", "older_than_hours", "dry_run", "removed": [{"uri", "kind", "age_h"}]}."""
    leftovers = find_leftovers(root, older_than_h, stale_after_s, own_lock, now)
    if not dry_run:
        for leftover in leftovers:
            storage.delete_tree(leftover.uri)
    return {"root": root, "older_than_hours": older_than_h, "dry_run": dry_run,
            "removed": [leftover.__dict__ for leftover in leftovers]}


def report_lines(report: dict) -> list[str]:
    """The human lines of a `collect_garbage` report: one per leftover, then a count."""
    verb = "would remove" if report["dry_run"] else "removed"
    lines = [f"gc: {verb} {item['kind']} {item['uri']} (unchanged for {item['age_h']:.1f} h)"
             for item in report["removed"]]
    lines.append(f"gc: {len(report['removed'])} {'to remove' if report['dry_run'] else 'removed'} under "
                 f"{report['root']} (older than {report['older_than_hours']:g} h)")
    return lines


def main(argv: list[str]) -> int:
    """Exit codes: 0 done (also when nothing was left over), 1 a root or `CURRENT` the user must fix."""
    from pipelines.common.command_line import command_parser
    from pipelines.config import ConfigError, load_config

    parser = command_parser("gc", "remove partial index versions and staging directories that killed runs left")
    parser.add_argument("--root", required=True, help="an output root: a nightly --root, an index --out, …")
    parser.add_argument("--older-than-hours", type=float, default=None,
                        help="only what has not changed for this long (default: retention.older_than_hours)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        hours = config.retention.older_than_hours if args.older_than_hours is None else args.older_than_hours
        if hours < 0:
            raise ConfigError(f"--older-than-hours must be at least 0, got {hours:g}")
        root = args.root.rstrip("/")
        if not storage.is_gcs(root) and not os.path.isdir(root):
            raise FileNotFoundError(f"--root {root}: no such directory")
        report = collect_garbage(root, hours, args.dry_run, config.nightly.lock_stale_after_s)
    except (ConfigError, FileNotFoundError, versions.UnreadablePointer) as err:
        print(f"posters gc: {err}", file=sys.stderr)
        return 1
    print("\n".join(report_lines(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
