"""Fenced publishing: the nightly lock carries a token (GCS: the lock object's generation) that a heartbeat renews,
and a `CURRENT` swap fenced by it happens only while the publisher still holds that token and its lease. On disk
and on fake-gcs-server (which enforces generation preconditions)."""
import datetime as dt
import time

import pytest

from pipelines.common import locks, storage, versions


def _version(index: str, name: str) -> str:
    storage.write_json(storage.join(versions.version_uri(index, name), "manifest.json"), {"version": name})
    return name


def _acquired_hours_ago(monkeypatch, uri: str, owner: str, hours: float) -> locks.Lock:
    """A lock taken `hours` ago (its acquired_at written as then), as a long run would hold it."""
    then = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
    with monkeypatch.context() as patch:
        patch.setattr(locks.storage, "utc_now", lambda: then)
        return locks.acquire_lock(uri, owner)


def test_of_two_holders_only_the_one_that_was_not_taken_over_publishes(root):
    lock_uri, index = storage.join(root, "nightly.lock"), storage.join(root, "published")
    first = locks.Heartbeat(locks.acquire_lock(lock_uri, "run-a"), interval_s=30, stale_after_s=60)
    # run-a stops renewing (a paused or partitioned process); run-b takes the lock over as stale
    second = locks.Heartbeat(locks.acquire_lock(lock_uri, "run-b", stale_after_s=0), interval_s=30, stale_after_s=60)
    with pytest.raises(locks.LockLost, match="run-a"):
        versions.publish(index, _version(index, "v-a"), fence=first.fenced)
    assert versions.read_current(index) is None, "the taken-over run moved CURRENT"
    assert versions.publish(index, _version(index, "v-b"), fence=second.fenced).version == "v-b"
    with pytest.raises(locks.LockLost):
        first.beat()  # its heartbeat learns it too, and the lock stays run-b's
    assert locks.read_lock(lock_uri).owner == "run-b" and versions.read_current(index).version == "v-b"
    locks.release_lock(second.lock)


def test_current_never_moves_once_the_lock_is_released_or_held_by_another_run(root):
    lock_uri, index = storage.join(root, "nightly.lock"), storage.join(root, "published")
    holder = locks.Heartbeat(locks.acquire_lock(lock_uri, "run-a"), interval_s=30, stale_after_s=60)
    versions.publish(index, _version(index, "v0"), fence=holder.fenced)
    versions.publish(index, _version(index, "v1"), fence=holder.fenced)
    locks.release_lock(holder.lock)
    with pytest.raises(locks.LockLost):
        versions.rollback(index, fence=holder.fenced)
    with pytest.raises(locks.LockLost):
        versions.publish(index, _version(index, "v2"), fence=holder.fenced)
    other = locks.acquire_lock(lock_uri, "run-b")  # the same path, another acquisition: another token
    with pytest.raises(locks.LockLost):
        versions.publish(index, "v2", fence=holder.fenced)
    assert versions.read_current(index).version == "v1"
    locks.release_lock(other)


def test_a_holder_whose_lease_ran_out_does_not_publish_even_if_nobody_took_over(root):
    lock_uri, index = storage.join(root, "nightly.lock"), storage.join(root, "published")
    holder = locks.Heartbeat(locks.acquire_lock(lock_uri, "run-a"), interval_s=30, stale_after_s=60)
    holder._renewed -= 31  # last renewal 31 s ago: 60 − 30 s of lease is spent, a taker may be on its way
    with pytest.raises(locks.LockLost, match="has not renewed"):
        versions.publish(index, _version(index, "v1"), fence=holder.fenced)
    assert versions.read_current(index) is None
    holder.beat()  # renewed: the lease is back
    assert versions.publish(index, "v1", fence=holder.fenced).version == "v1"
    locks.release_lock(holder.lock)


def test_a_renewed_lock_is_not_taken_over_however_long_ago_it_was_taken(root, monkeypatch):
    renewed_uri, silent_uri = storage.join(root, "renewed.lock"), storage.join(root, "silent.lock")
    renewed = locks.Heartbeat(_acquired_hours_ago(monkeypatch, renewed_uri, "long-run", 2), 60, 3600)
    _acquired_hours_ago(monkeypatch, silent_uri, "dead-run", 2)
    renewed.beat()
    with pytest.raises(locks.LockHeld, match="long-run"):
        locks.acquire_lock(renewed_uri, "impatient", stale_after_s=3600)
    taken = locks.acquire_lock(silent_uri, "next-run", stale_after_s=3600)  # no heartbeat: stale after 1 h
    assert locks.read_lock(silent_uri).owner == "next-run"
    if storage.is_gcs(renewed_uri):  # the token is the object's generation, and each renewal moves it on
        assert renewed.lock.claim == storage.gcs_blob(renewed_uri, get=True).generation
    locks.release_lock(renewed.lock)
    locks.release_lock(taken)


def test_the_heartbeat_thread_renews_the_lock_until_stopped(tmp_path):
    uri = str(tmp_path / "nightly.lock")
    with locks.Heartbeat(locks.acquire_lock(uri, "run-a"), interval_s=0.05) as heartbeat:
        deadline = time.monotonic() + 5
        while not locks.read_lock(uri).renewed_at and time.monotonic() < deadline:
            time.sleep(0.02)
    renewed_at = locks.read_lock(uri).renewed_at
    assert renewed_at and heartbeat.lock.info.renewed_at == renewed_at
    time.sleep(0.15)
    assert locks.read_lock(uri).renewed_at == renewed_at, "renewals went on after stop()"
    locks.release_lock(heartbeat.lock)


def test_a_heartbeat_slower_than_half_the_stale_limit_is_refused(tmp_path):
    lock = locks.acquire_lock(str(tmp_path / "nightly.lock"), "run-a")
    with pytest.raises(ValueError, match="twice per stale period"):
        locks.Heartbeat(lock, interval_s=40, stale_after_s=60)
