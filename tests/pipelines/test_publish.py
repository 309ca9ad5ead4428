"""Versioned publishing (CURRENT pointer, keep N, rollback, compare-and-swap) and locks, on disk and on GCS."""
import json
import os
import subprocess
import sys
import threading

import pytest

from pipelines import publish, storage


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    """An index root on local disk, or on fake-gcs-server (which enforces generation preconditions)."""
    if request.param == "local":
        return str(tmp_path / "index")
    return request.getfixturevalue("fake_gcs").uri("index")


def make_version(root: str, name: str) -> str:
    storage.write_json(storage.join(publish.version_uri(root, name), "manifest.json"), {"version": name})
    return name


def test_nothing_is_live_before_the_first_publish(root):
    assert publish.read_current(root) is None
    with pytest.raises(FileNotFoundError, match="nothing is published"):
        publish.current_version_uri(root)


def test_publish_makes_the_version_live(root):
    pointer = publish.publish(root, make_version(root, "v1"))
    assert publish.read_current(root).version == "v1" == pointer.version
    assert publish.current_version_uri(root) == publish.version_uri(root, "v1")


def test_publish_keeps_the_last_n_versions_and_deletes_older_ones(root):
    for name in ("v1", "v2", "v3", "v4"):
        publish.publish(root, make_version(root, name), keep=2)
    pointer = publish.read_current(root)
    assert (pointer.version, pointer.history) == ("v4", ("v3",))
    assert storage.exists(storage.join(root, "v3", "manifest.json"))
    assert not storage.exists(storage.join(root, "v2", "manifest.json"))
    assert not storage.exists(storage.join(root, "v1", "manifest.json"))


def test_an_incomplete_version_is_not_published(root):
    storage.write_json(storage.join(root, "v1", "shard-00000.faiss"), {})
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        publish.publish(root, "v1", required_file="manifest.json")
    assert publish.read_current(root) is None


def test_rollback_goes_back_one_version_and_the_next_publish_deletes_the_bad_one(root):
    publish.publish(root, make_version(root, "v1"))
    publish.publish(root, make_version(root, "v2"))
    pointer = publish.rollback(root)
    assert (pointer.version, pointer.history, pointer.retired) == ("v1", (), ("v2",))
    assert publish.read_current(root).version == "v1"
    with pytest.raises(ValueError, match="no previous version"):
        publish.rollback(root)
    publish.publish(root, make_version(root, "v3"))
    assert not storage.exists(storage.join(root, "v2", "manifest.json"))
    assert publish.read_current(root).history == ("v1",)


def test_of_two_publishers_that_saw_the_same_current_exactly_one_wins(root):
    base = publish.publish(root, make_version(root, "v1"))
    publish.publish(root, make_version(root, "v2"), expected_generation=base.generation)
    with pytest.raises(publish.PublishConflict):
        publish.publish(root, make_version(root, "v3"), expected_generation=base.generation)
    assert publish.read_current(root).version == "v2"


def test_concurrent_first_publishes_let_exactly_one_win(root):
    """Four threads publish their own version at once, each expecting no CURRENT yet (generation 0)."""
    names = [make_version(root, f"v{i}") for i in range(4)]
    start = threading.Barrier(len(names))
    outcomes = {}

    def publisher(name):
        start.wait()
        try:
            publish.publish(root, name, expected_generation=0)
            outcomes[name] = "won"
        except publish.PublishConflict:
            outcomes[name] = "lost"

    threads = [threading.Thread(target=publisher, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 4 and len(winners) == 1
    assert publish.read_current(root).version == winners[0]


def test_a_lock_is_refused_while_held_and_says_by_whom(root):
    uri = storage.join(root, "nightly.lock")
    lock = publish.acquire_lock(uri, "nightly-2025-01-02")
    with pytest.raises(publish.LockHeld, match="nightly-2025-01-02") as refused:
        publish.acquire_lock(uri, "nightly-2025-01-03")
    assert refused.value.info.owner == "nightly-2025-01-02" and refused.value.info.age_s >= 0
    assert publish.read_lock(uri).owner == "nightly-2025-01-02"
    publish.release_lock(lock)
    assert publish.read_lock(uri) is None
    with publish.held_lock(uri, "nightly-2025-01-03") as again:
        assert again.info.owner == "nightly-2025-01-03"
    assert publish.read_lock(uri) is None


def test_a_stale_lock_is_taken_over_and_its_old_holder_learns_it_lost_it(root):
    uri = storage.join(root, "nightly.lock")
    old = publish.acquire_lock(uri, "crashed-run")
    new = publish.acquire_lock(uri, "next-run", stale_after_s=0)
    assert publish.read_lock(uri).owner == "next-run"
    with pytest.raises(publish.LockLost):
        publish.release_lock(old)
    assert publish.read_lock(uri).owner == "next-run"
    publish.release_lock(new)


def test_a_fresh_lock_is_not_taken_over(root):
    uri = storage.join(root, "nightly.lock")
    publish.acquire_lock(uri, "running")
    with pytest.raises(publish.LockHeld):
        publish.acquire_lock(uri, "impatient", stale_after_s=3600)


def _lock_left_by_a_killed_process(uri: str) -> publish.LockInfo:
    """Takes the lock in a child process that is then killed (`os._exit`, no release, no cleanup)."""
    code = ("import os, sys; from pipelines import publish; "
            "publish.acquire_lock(sys.argv[1], 'killed-run'); os._exit(1)")
    child = subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
    _, stderr = child.communicate()  # waits for it and reaps it: its pid no longer exists
    assert child.returncode == 1, stderr
    held = publish.read_lock(uri)
    assert (held.owner, held.pid) == ("killed-run", child.pid)
    return held


def test_a_local_lock_whose_process_was_killed_is_taken_over_at_once(tmp_path, caplog):
    uri = str(tmp_path / "nightly.lock")
    dead = _lock_left_by_a_killed_process(uri)
    lock = publish.acquire_lock(uri, "retry", stale_after_s=6 * 3600)
    assert publish.read_lock(uri).owner == "retry" and lock.info.pid == os.getpid()
    assert f"its process {dead.pid} on this host is gone" in caplog.text
    publish.release_lock(lock)
    assert publish.read_lock(uri) is None


def test_a_lock_of_a_dead_process_on_another_host_waits_for_the_age_limit(tmp_path):
    uri = str(tmp_path / "nightly.lock")
    dead = _lock_left_by_a_killed_process(uri)
    with open(uri, "w") as handle:  # the same lock, as another machine sharing this disk would have left it
        json.dump({**dead.__dict__, "host": "another-host"}, handle)
    with pytest.raises(publish.LockHeld, match="another-host"):
        publish.acquire_lock(uri, "retry", stale_after_s=3600)
    assert publish.acquire_lock(uri, "retry", stale_after_s=0).info.owner == "retry"


# --- a swap whose response was lost, and cleaning up after a failed publish ----------------------------------
def test_a_gcs_swap_refused_because_its_own_earlier_attempt_landed_counts_as_success(fake_gcs):
    """The client retries a CURRENT write whose response was lost; the retry's precondition then fails (412).
    Simulated for real: CURRENT already holds exactly our bytes when the swap runs with the stale generation."""
    root = fake_gcs.uri("index")
    base = publish.publish(root, make_version(root, "v1"))
    new = publish.Pointer(version=make_version(root, "v2"), history=("v1",), retired=(), serial=base.serial + 1,
                          published_at=publish._now(), generation=0)
    uri = storage.join(root, publish.POINTER_FILE)
    storage.write_bytes(uri, json.dumps(new.to_json(), indent=2).encode("utf-8"))  # the attempt that landed
    landed = publish.read_current(root)
    swapped = publish._swap(root, new, base.generation)  # the retry: its expected generation is stale now
    assert (swapped.version, swapped.generation) == ("v2", landed.generation)
    assert publish.read_current(root).version == "v2"


def test_a_gcs_swap_refused_because_another_publisher_won_is_still_a_conflict(fake_gcs):
    root = fake_gcs.uri("index")
    base = publish.publish(root, make_version(root, "v1"))
    publish.publish(root, make_version(root, "v2"), expected_generation=base.generation)
    ours = publish.Pointer(version=make_version(root, "v3"), history=("v1",), retired=(), serial=base.serial + 1,
                           published_at=publish._now(), generation=0)
    with pytest.raises(publish.PublishConflict):
        publish._swap(root, ours, base.generation)
    assert publish.read_current(root).version == "v2"


def test_discarding_a_failed_version_keeps_it_when_current_names_it(root):
    publish.publish(root, make_version(root, "v1"))
    publish.publish(root, make_version(root, "v2"))
    make_version(root, "v3")
    for named in ("v2", "v1"):  # live, and in the history rollback goes back to
        assert publish.discard_version(root, named) is False
        assert storage.exists(storage.join(root, named, "manifest.json"))
    assert publish.discard_version(root, "v3") is True
    assert not storage.exists(storage.join(root, "v3", "manifest.json"))
    assert (publish.read_current(root).version, publish.read_current(root).history) == ("v2", ("v1",))


# --- locks are never empty; an unreadable one is freed by its age ---------------------------------------------
def test_a_local_lock_creator_killed_before_linking_leaves_no_lock(tmp_path):
    """A process killed after writing the lock's content but before it takes the name leaves no lock behind
    (the old O_EXCL create could leave an empty lock file that no rule would ever take over)."""
    uri = str(tmp_path / "nightly.lock")
    code = ("import os, sys; from pipelines import publish; os.link = lambda *args: os._exit(1); "
            "publish.acquire_lock(sys.argv[1], 'killed-mid-create')")
    child = subprocess.run([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
    assert child.returncode == 1, child.stderr
    assert not os.path.exists(uri) and publish.read_lock(uri) is None
    lock = publish.acquire_lock(uri, "next-run")  # no stale_after_s needed: nothing holds it
    assert publish.read_lock(uri).owner == "next-run"
    publish.release_lock(lock)
    leftovers = os.listdir(tmp_path)  # only the killed process's unlinked temporary file, which nothing reads
    assert len(leftovers) == 1 and leftovers[0].startswith("nightly.lock.new-")


def _write_unreadable_lock(uri: str, age_s: float) -> None:
    """An empty lock file, as a process killed between create and write could leave it, `age_s` old."""
    storage.write_bytes(uri, b"")
    if not storage.is_gcs(uri):
        os.utime(uri, (os.path.getmtime(uri) - age_s,) * 2)


def test_an_unreadable_lock_is_held_until_it_is_older_than_the_age_limit(root):
    uri = storage.join(root, "nightly.lock")
    _write_unreadable_lock(uri, age_s=2 * 3600)
    with pytest.raises(publish.LockHeld, match="cannot be read") as refused:
        publish.acquire_lock(uri, "next-run")  # no age limit: never taken over
    assert refused.value.info is None
    with pytest.raises(publish.LockHeld, match="cannot be read"):
        publish.acquire_lock(uri, "next-run", stale_after_s=6 * 3600)
    # local: 2 h old by its mtime; GCS: just written, so only a limit of 0 frees it
    lock = publish.acquire_lock(uri, "next-run", stale_after_s=3600 if not storage.is_gcs(uri) else 0)
    assert publish.read_lock(uri).owner == "next-run"
    publish.release_lock(lock)
    assert publish.read_lock(uri) is None
