"""The nightly lock: refused while held, taken over when stale or dead, never empty; on disk and on GCS."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipelines.common import locks, storage


def test_a_lock_is_refused_while_held_and_says_by_whom(root):
    uri = storage.join(root, "nightly.lock")
    lock = locks.acquire_lock(uri, "nightly-2025-01-02")
    with pytest.raises(locks.LockHeld, match="nightly-2025-01-02") as refused:
        locks.acquire_lock(uri, "nightly-2025-01-03")
    assert refused.value.info.owner == "nightly-2025-01-02" and refused.value.info.age_s >= 0
    assert locks.read_lock(uri).owner == "nightly-2025-01-02"
    locks.release_lock(lock)
    assert locks.read_lock(uri) is None
    again = locks.acquire_lock(uri, "nightly-2025-01-03")  # free again once released
    assert again.info.owner == "nightly-2025-01-03"
    locks.release_lock(again)
    assert locks.read_lock(uri) is None


def test_a_stale_lock_is_taken_over_and_its_old_holder_learns_it_lost_it(root):
    uri = storage.join(root, "nightly.lock")
    old = locks.acquire_lock(uri, "crashed-run")
    new = locks.acquire_lock(uri, "next-run", stale_after_s=0)
    assert locks.read_lock(uri).owner == "next-run"
    with pytest.raises(locks.LockLost):
        locks.release_lock(old)
    assert locks.read_lock(uri).owner == "next-run"
    locks.release_lock(new)


def test_a_fresh_lock_is_not_taken_over(root):
    uri = storage.join(root, "nightly.lock")
    locks.acquire_lock(uri, "running")
    with pytest.raises(locks.LockHeld):
        locks.acquire_lock(uri, "impatient", stale_after_s=3600)


@pytest.fixture(scope="module")
def killed_child(tmp_path_factory):
    """One child process (importing `locks` costs it a second) that takes the lock `held/nightly.lock` and is then
    killed (`os._exit`, no release, no cleanup) while creating `mid-create/nightly.lock`: after writing that lock's
    content, before it takes the name. Reaped: its pid no longer exists. Returns (the directory, its pid)."""
    where = tmp_path_factory.mktemp("killed")
    (where / "held").mkdir()
    (where / "mid-create").mkdir()
    code = ("import os, sys; from pipelines.common import locks; "
            "locks.acquire_lock(os.path.join(sys.argv[1], 'held', 'nightly.lock'), 'killed-run'); "
            "os.link = lambda *args: os._exit(1); "
            "locks.acquire_lock(os.path.join(sys.argv[1], 'mid-create', 'nightly.lock'), 'killed-mid-create')")
    child = subprocess.Popen([sys.executable, "-c", code, str(where)], stderr=subprocess.PIPE, text=True)
    _, stderr = child.communicate()  # waits for it and reaps it
    assert child.returncode == 1, stderr
    return where, child.pid


def _lock_left_by_a_killed_process(killed_child, uri: str) -> locks.LockInfo:
    """The lock the killed child took and never released, at `uri` (a copy of its file: each test its own)."""
    where, pid = killed_child
    shutil.copyfile(where / "held" / "nightly.lock", uri)
    held = locks.read_lock(uri)
    assert (held.owner, held.pid) == ("killed-run", pid)
    return held


def test_a_local_lock_whose_process_was_killed_is_taken_over_at_once(killed_child, tmp_path, caplog):
    uri = str(tmp_path / "nightly.lock")
    dead = _lock_left_by_a_killed_process(killed_child, uri)
    lock = locks.acquire_lock(uri, "retry", stale_after_s=6 * 3600)
    assert locks.read_lock(uri).owner == "retry" and lock.info.pid == os.getpid()
    assert f"its process {dead.pid} on this host is gone" in caplog.text
    locks.release_lock(lock)
    assert locks.read_lock(uri) is None


def test_a_lock_of_a_dead_process_on_another_host_waits_for_the_age_limit(killed_child, tmp_path):
    uri = str(tmp_path / "nightly.lock")
    dead = _lock_left_by_a_killed_process(killed_child, uri)
    with open(uri, "w") as handle:  # the same lock, as another machine sharing this disk would have left it
        json.dump({**dead.__dict__, "host": "another-host"}, handle)
    with pytest.raises(locks.LockHeld, match="another-host"):
        locks.acquire_lock(uri, "retry", stale_after_s=3600)
    assert locks.acquire_lock(uri, "retry", stale_after_s=0).info.owner == "retry"


# --- locks are never empty; an unreadable one is freed by its age ---------------------------------------------
def test_a_local_lock_creator_killed_before_linking_leaves_no_lock(killed_child):
    """A process killed after writing the lock's content but before it takes the name leaves no lock behind
    (the old O_EXCL create could leave an empty lock file that no rule would ever take over)."""
    directory = killed_child[0] / "mid-create"  # this test's alone
    uri = str(directory / "nightly.lock")
    assert not os.path.exists(uri) and locks.read_lock(uri) is None
    lock = locks.acquire_lock(uri, "next-run")  # no stale_after_s needed: nothing holds it
    assert locks.read_lock(uri).owner == "next-run"
    locks.release_lock(lock)
    leftovers = os.listdir(directory)  # only the killed process's unlinked temporary file, which nothing reads
    assert len(leftovers) == 1 and leftovers[0].startswith("nightly.lock.new-")


def _write_unreadable_lock(uri: str, age_s: float) -> None:
    """An empty lock file, as a process killed between create and write could leave it, `age_s` old."""
    storage.write_bytes(uri, b"")
    if not storage.is_gcs(uri):
        os.utime(uri, (os.path.getmtime(uri) - age_s,) * 2)


def test_an_unreadable_lock_is_held_until_it_is_older_than_the_age_limit(root):
    uri = storage.join(root, "nightly.lock")
    _write_unreadable_lock(uri, age_s=2 * 3600)
    with pytest.raises(locks.LockHeld, match="cannot be read") as refused:
        locks.acquire_lock(uri, "next-run")  # no age limit: never taken over
    assert refused.value.info is None
    with pytest.raises(locks.LockHeld, match="cannot be read"):
        locks.acquire_lock(uri, "next-run", stale_after_s=6 * 3600)
    # local: 2 h old by its mtime; GCS: just written, so only a limit of 0 frees it
    lock = locks.acquire_lock(uri, "next-run", stale_after_s=3600 if not storage.is_gcs(uri) else 0)
    assert locks.read_lock(uri).owner == "next-run"
    locks.release_lock(lock)
    assert locks.read_lock(uri) is None
