"""Versioned publishing (CURRENT pointer, keep N, rollback, compare-and-swap), on disk and on GCS."""
import json
import threading

import pytest

from pipelines.common import storage, versions


def make_version(root: str, name: str) -> str:
    storage.write_json(storage.join(versions.version_uri(root, name), "manifest.json"), {"version": name})
    return name


def test_nothing_is_live_before_the_first_publish(root):
    assert versions.read_current(root) is None
    with pytest.raises(FileNotFoundError, match="nothing is published"):
        versions.current_version_uri(root)


def test_publish_makes_the_version_live(root):
    pointer = versions.publish(root, make_version(root, "v1"))
    assert versions.read_current(root).version == "v1" == pointer.version
    assert versions.current_version_uri(root) == versions.version_uri(root, "v1")


def test_publish_keeps_the_last_n_versions_and_deletes_older_ones(root):
    for name in ("v1", "v2", "v3", "v4"):
        versions.publish(root, make_version(root, name), keep=2)
    pointer = versions.read_current(root)
    assert (pointer.version, pointer.history) == ("v4", ("v3",))
    assert storage.exists(storage.join(root, "v3", "manifest.json"))
    assert not storage.exists(storage.join(root, "v2", "manifest.json"))
    assert not storage.exists(storage.join(root, "v1", "manifest.json"))


def test_an_incomplete_version_is_not_published(root):
    storage.write_json(storage.join(root, "v1", "shard-00000.faiss"), {})
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        versions.publish(root, "v1", required_file="manifest.json")
    assert versions.read_current(root) is None


def test_rollback_goes_back_one_version_and_the_next_publish_deletes_the_bad_one(root):
    versions.publish(root, make_version(root, "v1"))
    versions.publish(root, make_version(root, "v2"))
    pointer = versions.rollback(root)
    assert (pointer.version, pointer.history, pointer.retired) == ("v1", (), ("v2",))
    assert versions.read_current(root).version == "v1"
    with pytest.raises(ValueError, match="no previous version"):
        versions.rollback(root)
    versions.publish(root, make_version(root, "v3"))
    assert not storage.exists(storage.join(root, "v2", "manifest.json"))
    assert versions.read_current(root).history == ("v1",)


def test_of_two_publishers_that_saw_the_same_current_exactly_one_wins(root):
    base = versions.publish(root, make_version(root, "v1"))
    versions.publish(root, make_version(root, "v2"), expected_generation=base.generation)
    with pytest.raises(versions.PublishConflict):
        versions.publish(root, make_version(root, "v3"), expected_generation=base.generation)
    assert versions.read_current(root).version == "v2"


def test_concurrent_first_publishes_let_exactly_one_win(root):
    """Four threads publish their own version at once, each expecting no CURRENT yet (generation 0)."""
    names = [make_version(root, f"v{i}") for i in range(4)]
    start = threading.Barrier(len(names))
    outcomes = {}

    def publisher(name):
        start.wait()
        try:
            versions.publish(root, name, expected_generation=0)
            outcomes[name] = "won"
        except versions.PublishConflict:
            outcomes[name] = "lost"

    threads = [threading.Thread(target=publisher, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 4 and len(winners) == 1
    assert versions.read_current(root).version == winners[0]


# --- a swap whose response was lost, and cleaning up after a failed publish ----------------------------------
def test_a_gcs_swap_refused_because_its_own_earlier_attempt_landed_counts_as_success(fake_gcs):
    """The client retries a CURRENT write whose response was lost; the retry's precondition then fails (412).
    Simulated for real: CURRENT already holds exactly our bytes when the swap runs with the stale generation."""
    root = fake_gcs.uri("index")
    base = versions.publish(root, make_version(root, "v1"))
    new = versions.Pointer(version=make_version(root, "v2"), history=("v1",), retired=(), serial=base.serial + 1,
                          published_at=storage.utc_now(), generation=0)
    uri = storage.join(root, versions.POINTER_FILE)
    storage.write_bytes(uri, json.dumps(new.to_json(), indent=2).encode("utf-8"))  # the attempt that landed
    landed = versions.read_current(root)
    swapped = versions._swap(root, new, base.generation)  # the retry: its expected generation is stale now
    assert (swapped.version, swapped.generation) == ("v2", landed.generation)
    assert versions.read_current(root).version == "v2"


def test_a_gcs_swap_refused_because_another_publisher_won_is_still_a_conflict(fake_gcs):
    root = fake_gcs.uri("index")
    base = versions.publish(root, make_version(root, "v1"))
    versions.publish(root, make_version(root, "v2"), expected_generation=base.generation)
    ours = versions.Pointer(version=make_version(root, "v3"), history=("v1",), retired=(), serial=base.serial + 1,
                           published_at=storage.utc_now(), generation=0)
    with pytest.raises(versions.PublishConflict):
        versions._swap(root, ours, base.generation)
    assert versions.read_current(root).version == "v2"


def test_discarding_a_failed_version_keeps_it_when_current_names_it(root):
    versions.publish(root, make_version(root, "v1"))
    versions.publish(root, make_version(root, "v2"))
    make_version(root, "v3")
    for named in ("v2", "v1"):  # live, and in the history rollback goes back to
        assert versions.discard_version(root, named) is False
        assert storage.exists(storage.join(root, named, "manifest.json"))
    assert versions.discard_version(root, "v3") is True
    assert not storage.exists(storage.join(root, "v3", "manifest.json"))
    assert (versions.read_current(root).version, versions.read_current(root).history) == ("v2", ("v1",))


# --- publishing is monotonic in the run date --------------------------------------------------------------------
def test_an_older_run_date_cannot_replace_a_newer_live_version_unless_allowed(root):
    versions.publish(root, make_version(root, "v2"), run_date="2026-01-02")
    current = storage.read_bytes(storage.join(root, versions.POINTER_FILE))
    with pytest.raises(versions.OlderRunDate, match="published for 2026-01-02, later than 2026-01-01") as refused:
        versions.publish(root, make_version(root, "v1"), run_date="2026-01-01")
    assert "\n" not in str(refused.value) and "--allow-older" in str(refused.value)
    assert storage.read_bytes(storage.join(root, versions.POINTER_FILE)) == current  # nothing published
    pointer = versions.publish(root, "v1", run_date="2026-01-01", allow_older=True)
    assert (pointer.version, pointer.run_date, pointer.history) == ("v1", "2026-01-01", ("v2",))
    assert versions.read_current(root).run_dates == (("v1", "2026-01-01"), ("v2", "2026-01-02"))


def test_the_same_or_a_later_run_date_and_undated_publishes_pass(root):
    versions.publish(root, make_version(root, "v1"), run_date="2026-01-02")
    versions.publish(root, make_version(root, "v2"), run_date="2026-01-02")  # a rerun of the same night
    versions.publish(root, make_version(root, "v3"), run_date="2026-01-03")
    versions.publish(root, make_version(root, "v4"))  # `posters index` by hand: no run date
    assert versions.read_current(root).run_date is None
    versions.publish(root, make_version(root, "v5"), run_date="2026-01-01")


def test_rollback_is_always_allowed_and_restores_the_older_run_date(root):
    versions.publish(root, make_version(root, "v1"), run_date="2026-01-01")
    versions.publish(root, make_version(root, "v2"), run_date="2026-01-02")
    pointer = versions.rollback(root)
    assert (pointer.version, pointer.run_date) == ("v1", "2026-01-01")
    assert versions.read_current(root).run_date == "2026-01-01"
    versions.publish(root, make_version(root, "v3"), run_date="2026-01-01")  # not older than what is live now


# --- a broken CURRENT is named, with what to do --------------------------------------------------------------
@pytest.mark.parametrize("content, problem", [(b"", "is empty"), (b'{"version": "v1", "hist', "is not valid JSON"),
                                              (b'["v1"]', "names no version")])
def test_an_unreadable_current_names_the_file_and_what_to_do(root, content, problem):
    make_version(root, "v1")
    uri = storage.join(root, versions.POINTER_FILE)
    storage.write_bytes(uri, content)
    for attempt in (lambda: versions.read_current(root), lambda: versions.publish(root, make_version(root, "v2")),
                    lambda: versions.rollback(root)):
        with pytest.raises(versions.UnreadablePointer) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"{uri} {problem}") and "posters index" in message and "\n" not in message
