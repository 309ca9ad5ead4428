"""`posters gc`: partial index versions and staging directories that killed runs left, removed once old enough,
never what `CURRENT` names nor the staging of a run a live lock holds; on local disk and on fake GCS."""
import time

import pytest

from pipelines.common import locks, retention, storage, versions
from pipelines.contracts import INDEX_MANIFEST_FILE, NIGHTLY_LOCK_FILE

LIVE, PREVIOUS, KILLED, COMPLETE_UNPUBLISHED = ("20260102T030405Z-aaaaaa", "20260101T030405Z-bbbbbb",
                                                "20260103T030405Z-cccccc", "20260103T040405Z-dddddd")
LATER = time.time() + 48 * 3600  # "now", two days on: everything written by the test is 48 h old


def write(uri: str, data: bytes = b"x") -> str:
    storage.write_bytes(uri, data)
    return uri


def make_nightly_root(root: str) -> dict[str, str]:
    """A nightly root as killed runs leave it: two published versions, a killed build, a complete build killed
    before its publish, staging directories of two runs, and things gc must never touch."""
    index = storage.join(root, "index")
    for version in (PREVIOUS, LIVE):
        write(storage.join(index, version, INDEX_MANIFEST_FILE), b"{}")
        versions.publish(index, version)
    paths = {
        "killed": storage.join(index, KILLED),
        "unpublished": storage.join(index, COMPLETE_UNPUBLISHED),
        "staging_old_run": storage.join(root, "runs", "2026-01-01", ".staging-embeddings-0123456789ab"),
        "staging_today": storage.join(root, "runs", "2026-01-02", ".staging-candidates-0123456789ab"),
        "embeddings": storage.join(root, "runs", "2026-01-01", "embeddings"),
    }
    write(storage.join(paths["killed"], "shard-00000.faiss"))
    write(storage.join(paths["unpublished"], INDEX_MANIFEST_FILE), b"{}")
    write(storage.join(paths["staging_old_run"], "part-00000.parquet"))
    write(storage.join(paths["staging_today"], "item2item", "part-00000.parquet"))
    write(storage.join(paths["embeddings"], "part-00000.parquet"))
    return paths


def test_old_leftovers_are_removed_and_what_current_names_is_kept(root):
    paths = make_nightly_root(root)
    report = retention.collect_garbage(root, older_than_h=24, now=LATER)
    removed = {item["uri"]: item["kind"] for item in report["removed"]}
    assert removed == {paths["killed"]: retention.PARTIAL_VERSION, paths["unpublished"]: retention.PARTIAL_VERSION,
                       paths["staging_old_run"]: retention.STAGING, paths["staging_today"]: retention.STAGING}
    left = storage.list_files(root)
    assert not [path for path in left if any(path.startswith(uri + "/") for uri in removed)]
    index = storage.join(root, "index")
    for version in (LIVE, PREVIOUS):
        assert storage.join(index, version, INDEX_MANIFEST_FILE) in left
    assert storage.join(paths["embeddings"], "part-00000.parquet") in left
    assert versions.read_current(index).version == LIVE


def test_recent_leftovers_stay_and_a_dry_run_removes_nothing(root):
    make_nightly_root(root)
    before = storage.list_files(root)
    assert retention.collect_garbage(root, older_than_h=24)["removed"] == []  # written just now
    report = retention.collect_garbage(root, older_than_h=24, dry_run=True, now=LATER)
    assert len(report["removed"]) == 4 and storage.list_files(root) == before
    assert retention.report_lines(report)[0].startswith("gc: would remove ")


def test_a_live_lock_keeps_its_runs_staging_but_not_other_runs(root):
    paths = make_nightly_root(root)
    lock = locks.acquire_lock(storage.join(root, NIGHTLY_LOCK_FILE), owner="nightly 2026-01-02")
    try:
        removed = {item["uri"] for item in retention.collect_garbage(root, 24, now=LATER)["removed"]}
        assert paths["staging_today"] not in removed and paths["staging_old_run"] in removed
        assert storage.exists(storage.join(paths["staging_today"], "item2item", "part-00000.parquet"))
        # The lock's own holder, cleaning up after its finished run, is not kept out by it.
        removed = {item["uri"] for item in retention.collect_garbage(root, 24, own_lock=lock, now=LATER)["removed"]}
        assert removed == {paths["staging_today"]}
    finally:
        locks.release_lock(lock)


def test_without_current_only_version_directories_without_a_manifest_go(root):
    killed, complete = storage.join(root, KILLED), storage.join(root, COMPLETE_UNPUBLISHED)
    write(storage.join(killed, "shard-00000.faiss"))
    write(storage.join(complete, INDEX_MANIFEST_FILE), b"{}")
    removed = [item["uri"] for item in retention.collect_garbage(root, 24, now=LATER)["removed"]]
    assert removed == [killed]
    assert storage.exists(storage.join(complete, INDEX_MANIFEST_FILE))


def test_an_unreadable_current_stops_the_collection(root):
    write(storage.join(root, KILLED, "shard-00000.faiss"))
    write(storage.join(root, versions.POINTER_FILE), b"")
    with pytest.raises(versions.UnreadablePointer):
        retention.collect_garbage(root, 24, now=LATER)
    assert storage.exists(storage.join(root, KILLED, "shard-00000.faiss"))


def test_posters_gc_lists_then_removes(root, capsys):
    paths = make_nightly_root(root)
    assert retention.main(["--root", root, "--older-than-hours", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"gc: would remove partial version {paths['killed']} " in out and "gc: 4 to remove under" in out
    assert storage.exists(storage.join(paths["killed"], "shard-00000.faiss"))
    assert retention.main(["--root", root, "--older-than-hours", "0"]) == 0
    out = capsys.readouterr().out
    assert f"gc: removed staging directory {paths['staging_old_run']} " in out and "gc: 4 removed under" in out
    assert not storage.exists(storage.join(paths["killed"], "shard-00000.faiss"))
    assert retention.main(["--root", root]) == 0  # the config's default age: nothing else is left over
    assert "gc: 0 removed" in capsys.readouterr().out


def test_posters_gc_is_registered_and_refuses_a_missing_root(tmp_path, capsys):
    from pipelines.cli import SUBCOMMANDS, main

    assert SUBCOMMANDS["gc"][0] == "pipelines.common.retention:main"
    assert main(["gc", "--root", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.strip() == f"posters gc: --root {tmp_path / 'nothing'}: no such directory"
    assert main(["gc", "--root", str(tmp_path), "--set", "retention.older_than_hours=-1"]) == 1
    assert "retention.older_than_hours must be at least 0" in capsys.readouterr().err
