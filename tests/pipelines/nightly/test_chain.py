"""`posters nightly`: the real embed → index → candidates chain on a tiny catalog and model. A finished date is
left alone, an interrupted one resumes where it stopped, the lock keeps a second run out, and a failing gate
leaves the published `CURRENT` as it was."""
import contextlib
import glob
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from pipelines.common import locks, versions
from pipelines.contracts import INDEX_CURRENT_FILE, NIGHTLY_LOCK_FILE, NIGHTLY_SUMMARY_FILE, SUCCESS_FILE
from pipelines.nightly import chain as nightly
from pipelines.nightly.run_state import RunState
from tests.pipelines.nightly.conftest import N_TITLES

FAST = ["--set", "embed.min_batch_size=4", "--set", "embed.max_batch_size=8", "--set", "candidates.k=5",
        "--set", "nightly.overlap_k=5",
        # 16 titles and an untrained model: evaluate every title, a quick map with 3 posters on it, 3 titles' grids
        # in the report, and gates it can pass.
        "--set", "evaluate.retrieval_split=all", "--set", "evaluate.k=5", "--set", "evaluate.map_projection=pca",
        "--set", "evaluate.map_posters=3", "--set", "evaluate.report_titles=3",
        "--set", "evaluate.min_near_duplicate_recall_at_1=null", "--set", "evaluate.min_hit_rate_vs_popularity=null",
        "--set", "evaluate.max_drop_from_previous=null"]


def nightly_argv(inputs, root, date, *extra, catalog=None, history=None):
    return ["--config", "configs/local.yaml", *FAST, "--date", date, "--catalog", catalog or inputs["catalog"],
            "--model", inputs["model"], "--history", history or inputs["history"], "--root", str(root), *extra]


def summary_of(root, date) -> dict:
    with open(os.path.join(root, "runs", date, "summary.json")) as handle:
        return json.load(handle)


def snapshot(root) -> dict:
    """Every file under `root` with its size and modification time."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.stat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def first_night(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly_root")
    assert nightly.main(nightly_argv(inputs, root, "2024-07-01")) == 0
    return root


def test_a_night_runs_every_stage_publishes_the_index_and_writes_its_summary(first_night):
    summary = summary_of(first_night, "2024-07-01")
    assert {s: info["ran"] for s, info in summary["stages"].items()} == {"embed": True, "evaluate": True,
                                                                         "index": True, "candidates": True}
    assert summary["counts"]["embeddings"]["new"] == N_TITLES
    assert summary["counts"]["titles"] == N_TITLES and summary["counts"]["users"] == 12
    assert versions.read_current(str(first_night / "index")).version == summary["versions"]["index"]
    assert set(summary["timings_s"]) == {"embed", "evaluate", "index", "candidates", "total"}
    assert summary["previous_run"] is None and summary["overlap"] is None
    assert os.path.exists(first_night / "runs" / "2024-07-01" / SUCCESS_FILE)
    assert not os.path.exists(first_night / NIGHTLY_LOCK_FILE)


def test_rerunning_a_finished_date_changes_nothing(inputs, first_night, capsys):
    before = snapshot(first_night)
    assert nightly.main(nightly_argv(inputs, first_night, "2024-07-01")) == 0
    assert snapshot(first_night) == before
    assert "already finished" in capsys.readouterr().out


def item2item_top_k(root, date, k) -> dict[str, list[str]]:
    """title_id → its first k neighbours' title_ids, read straight from that night's item2item Parquet files."""
    lists = {}
    for path in sorted(glob.glob(os.path.join(root, "runs", date, "candidates", "item2item", "*.parquet"))):
        for row in pq.read_table(path, columns=["title_id", "neighbors"]).to_pylist():
            lists[row["title_id"]] = [n["title_id"] for n in row["neighbors"]][:k]
    return lists


def _age(path, hours: float) -> None:
    """Sets the modification time of `path` and everything under it `hours` back."""
    then = time.time() - hours * 3600
    for folder, directories, files in os.walk(path):
        for name in directories + files:
            os.utime(os.path.join(folder, name), (then, then))
    os.utime(path, (then, then))


@pytest.fixture(scope="module")
def second_night(inputs, first_night, tmp_path_factory):
    """2024-07-02 on a copy of the first night's root: title 1's poster changed (to title 2's), an alert threshold
    of 1.0 (flags any night whose lists are not all identical to the previous night's), and what killed runs left
    behind: a partial index version and a staging directory 30 hours old, a staging directory just made. Run once;
    its printed lines and warnings are kept for the tests."""
    work = tmp_path_factory.mktemp("second_night")
    root = work / "root"
    shutil.copytree(first_night, root)
    catalog_dir = work / "catalog"
    shutil.copytree(inputs["root"] / "catalog", catalog_dir)
    posters = sorted((catalog_dir / "posters").iterdir())
    shutil.copyfile(posters[1], posters[0])  # title 1's poster changes (to title 2's)
    leftovers = {"killed_build": root / "index" / "20240630T020000Z-0a1b2c",
                 "staging": root / "runs" / "2024-06-30" / ".staging-embeddings-0123456789ab",
                 "recent": root / "runs" / "2024-06-30" / ".staging-candidates-0123456789ab"}
    leftovers["killed_build"].mkdir()
    (leftovers["killed_build"] / "shard-00000.faiss").write_bytes(b"half a shard")
    leftovers["staging"].mkdir(parents=True)
    (leftovers["staging"] / "part-00000.parquet").write_bytes(b"half a file")
    leftovers["recent"].mkdir()
    for old in (leftovers["killed_build"], leftovers["staging"]):
        _age(old, hours=30)
    argv = nightly_argv(inputs, root, "2024-07-02", "--set", "nightly.overlap_alert_below=1.0",
                        catalog=str(catalog_dir / "catalog.csv"))
    warnings, printed = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(warnings)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("pipelines.nightly.chain")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(printed):
            code = nightly.main(argv)
    finally:
        logger.removeHandler(handler)
    assert code == 0, printed.getvalue()[-2000:]
    return {"root": root, "changed": posters[0].stem,  # posters are named <title_id>.<ext>
            "warnings": warnings.getvalue(), "printed": printed.getvalue(), **leftovers}


def test_the_next_night_embeds_only_changed_posters_and_reports_overlap_for_unchanged_ones(second_night):
    root, changed = second_night["root"], second_night["changed"]
    summary = summary_of(root, "2024-07-02")
    embeddings = summary["counts"]["embeddings"]
    assert (embeddings["new"], embeddings["changed"], embeddings["unchanged"]) == (0, 1, N_TITLES - 1)
    assert summary["previous_run"] == "2024-07-01"

    # overlap@5 worked out here from both nights' item2item outputs, over the titles whose poster did not change.
    k = 5
    yesterday, today = item2item_top_k(root, "2024-07-01", k), item2item_top_k(root, "2024-07-02", k)
    unchanged = sorted(set(today) - {changed})
    assert len(unchanged) == N_TITLES - 1 and set(yesterday) == set(today)
    assert all(len(today[t]) == k and len(yesterday[t]) == k for t in unchanged)
    expected = sum(len(set(today[t]) & set(yesterday[t])) / k for t in unchanged) / len(unchanged)
    assert expected < 1.0  # title 2 now has an identical twin (title 1), so some lists did change
    overlap = summary["overlap"]
    assert (overlap["titles_compared"], overlap["against"], overlap["k"]) == (N_TITLES - 1, "2024-07-01", k)
    assert overlap["overlap_at_k"] == pytest.approx(expected, abs=1e-4)
    assert overlap["alert"] is True
    assert f"overlap@{k} with 2024-07-01 is {expected:.3f}, below 1.000" in second_night["warnings"]


@pytest.fixture(scope="module")
def crashed_in_candidates(inputs, failed_recall_gate, tmp_path_factory):
    """The retry of the night the recall gate stopped (on a copy of its root), the index back at its settings and a
    history the candidates stage cannot read, run once: embed and evaluate finished before (so the evaluate stage,
    which reads the history too, does not run again), index finishes, candidates fails."""
    work = tmp_path_factory.mktemp("crashed_in_candidates")
    root = work / "root"
    shutil.copytree(failed_recall_gate[0], root)
    history = work / "history.parquet"
    history.write_bytes(b"not parquet: the candidates stage fails on it")
    assert nightly.main(nightly_argv(inputs, root, "2024-07-02", history=str(history))) == nightly.EXIT_STAGE_FAILED
    return root


NO_EVALUATION = ["--set", "nightly.evaluate=false"]


@pytest.fixture(scope="module")
def retried_after_the_crash(inputs, crashed_in_candidates, tmp_path_factory):
    """The night that crashed in candidates (on a copy of its root), retried twice, run once for the two tests
    below: first by a run that is killed inside the candidates stage (a process of its own, which dies without
    releasing the lock), then, the history fixed, by the 06:30 retry. → what both saw."""
    work = tmp_path_factory.mktemp("retried_after_the_crash")
    root = work / "root"
    shutil.copytree(crashed_in_candidates, root)
    index_versions = sorted(os.listdir(root / "index"))
    # It imports no stage but the chain's own modules, so the child starts in about two CPU seconds instead of
    # importing TensorFlow.
    killed_in_candidates = ("import os, sys; from pipelines.nightly import chain as nightly; "
                            "nightly.STAGE_FUNCTIONS['candidates'] = lambda *args: os._exit(9); "
                            "nightly.main(sys.argv[1:])")
    child = subprocess.run([sys.executable, "-c", killed_in_candidates, *nightly_argv(inputs, root, "2024-07-02")],
                           capture_output=True, text=True)
    lock = locks.read_lock(str(root / NIGHTLY_LOCK_FILE))
    shutil.copyfile(inputs["root"] / "history.csv", work / "fixed.csv")
    code = nightly.main(nightly_argv(inputs, root, "2024-07-02", history=str(work / "fixed.csv")))
    return {"root": root, "child": child, "lock": lock, "code": code, "index_versions": index_versions}


def test_a_crash_after_the_index_stage_resumes_with_candidates_only(crashed_in_candidates, retried_after_the_crash):
    state = RunState(str(crashed_in_candidates / "runs" / "2024-07-02"))
    assert state.stage_result("index") is not None and state.stage_result("candidates") is None
    published = versions.read_current(str(crashed_in_candidates / "index")).version
    assert published == state.stage_result("index")["version"]

    # The first retry went straight to candidates (where it was killed), the second ran candidates only.
    printed = retried_after_the_crash["child"].stdout
    assert all(f"nightly 2024-07-02: {stage} finished earlier, skipped" in printed
               for stage in ("embed", "evaluate", "index")), printed[-2000:]
    root = retried_after_the_crash["root"]
    assert retried_after_the_crash["code"] == 0
    summary = summary_of(root, "2024-07-02")
    assert {s: info["ran"] for s, info in summary["stages"].items()} == {"embed": False, "evaluate": False,
                                                                         "index": False, "candidates": True}
    assert summary["versions"]["index"] == published
    assert sorted(os.listdir(root / "index")) == retried_after_the_crash["index_versions"]


def test_a_run_killed_after_the_index_stage_leaves_its_lock_and_the_rerun_runs_candidates_only(
        retried_after_the_crash):
    """The killed run is a retry of the night that crashed in candidates: a process of its own (the lock names its
    pid) that passes the finished stages and dies in candidates without releasing the lock; the next retry takes
    the lock over (its process is gone) and resumes."""
    child = retried_after_the_crash["child"]
    assert child.returncode == 9, child.stderr[-2000:]
    assert "nightly 2024-07-02: candidates …" in child.stdout  # killed inside the candidates stage
    assert retried_after_the_crash["lock"].owner == "nightly 2024-07-02"  # never released

    assert retried_after_the_crash["code"] == 0  # the 06:30 retry: the lock's process is gone, so it resumes
    root = retried_after_the_crash["root"]
    summary = summary_of(root, "2024-07-02")
    assert {s: info["ran"] for s, info in summary["stages"].items()} == {"embed": False, "evaluate": False,
                                                                         "index": False, "candidates": True}
    assert not os.path.exists(root / NIGHTLY_LOCK_FILE)


def test_an_index_published_just_before_a_crash_is_adopted_not_built_again(inputs, first_night, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(first_night, root)
    run_dir = root / "runs" / "2024-07-01"
    for marker in ("stages/index.json", "stages/candidates.json", SUCCESS_FILE):  # as if killed after publishing
        (run_dir / marker).unlink()
    index_versions = sorted(os.listdir(root / "index"))
    assert nightly.main(nightly_argv(inputs, root, "2024-07-01")) == 0
    summary = summary_of(root, "2024-07-01")
    assert {s: info["ran"] for s, info in summary["stages"].items()} == {"embed": False, "evaluate": False,
                                                                         "index": True, "candidates": True}
    assert summary["stages"]["index"]["adopted"] is True
    assert sorted(os.listdir(root / "index")) == index_versions


IVF_THAT_MISSES = ["--set", "index.factory=IVF4,Flat", "--set", "index.nprobe=1", "--set", "index.tune_nprobe=false",
                   "--set", "index.min_recall_at_10=0.99"]


@pytest.fixture(scope="module")
def failed_evaluation_gate(inputs, first_night, tmp_path_factory):
    """2024-07-02 on a copy of the first night's root with a near-duplicate gate just above the recall@1 the
    first night measured, run once: embed finishes, the evaluation gate fails. → (root, that recall, exit code)."""
    root = tmp_path_factory.mktemp("failed_evaluation_gate") / "root"
    shutil.copytree(first_night, root)
    first = json.loads((root / "runs" / "2024-07-01" / "evaluation" / "evaluation.json").read_text())
    recall = first["near_duplicates"]["embedding"]["recall_at_1"]
    argv = nightly_argv(inputs, root, "2024-07-02", "--set", f"evaluate.min_near_duplicate_recall_at_1={recall + 1e-3}")
    return root, recall, nightly.main(argv)


@pytest.fixture(scope="module")
def failed_recall_gate(inputs, failed_evaluation_gate, tmp_path_factory):
    """The retry of the night the evaluation gate stopped (on a copy of its root), that gate back off and an index
    that misses the recall gate, run once: embed finished before, evaluate finishes, the index stage fails.
    → (root, exit code, what it printed on stderr)."""
    root = tmp_path_factory.mktemp("failed_recall_gate") / "root"
    shutil.copytree(failed_evaluation_gate[0], root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = nightly.main(nightly_argv(inputs, root, "2024-07-02", *IVF_THAT_MISSES))
    return root, code, err.getvalue()


def test_a_failing_recall_gate_exits_non_zero_and_leaves_current_untouched(first_night, failed_recall_gate):
    root, code, err = failed_recall_gate
    assert code == nightly.EXIT_STAGE_FAILED
    assert "RecallTooLow" in err
    current = (first_night / "index" / INDEX_CURRENT_FILE).read_bytes()
    assert (root / "index" / INDEX_CURRENT_FILE).read_bytes() == current
    state = RunState(str(root / "runs" / "2024-07-02"))
    assert state.stage_result("embed") is not None and state.stage_result("evaluate") is not None
    assert state.stage_result("index") is None and not state.is_finished()
    assert not os.path.exists(root / NIGHTLY_LOCK_FILE)


def test_a_held_lock_keeps_a_second_run_out(inputs, tmp_path, capsys):
    root = tmp_path / "root"
    lock = locks.acquire_lock(str(root / NIGHTLY_LOCK_FILE), owner="nightly 2024-07-01")
    try:
        assert nightly.main(nightly_argv(inputs, root, "2024-07-02")) == nightly.EXIT_LOCKED
        assert "nightly 2024-07-01" in capsys.readouterr().err
        assert sorted(os.listdir(root)) == [NIGHTLY_LOCK_FILE]
    finally:
        locks.release_lock(lock)


def test_a_held_lock_on_gcs_keeps_a_second_run_out(inputs, fake_gcs):
    root = fake_gcs.uri("nightly")
    lock = locks.acquire_lock(f"{root}/{NIGHTLY_LOCK_FILE}", owner="nightly 2024-07-01")
    try:
        assert nightly.main(nightly_argv(inputs, root, "2024-07-02")) == nightly.EXIT_LOCKED
        names = [blob.name for blob in fake_gcs.client.list_blobs(fake_gcs.bucket)]
        assert names == [f"nightly/{NIGHTLY_LOCK_FILE}"]
    finally:
        locks.release_lock(lock)
    second = locks.acquire_lock(f"{root}/{NIGHTLY_LOCK_FILE}", owner="nightly 2024-07-02")
    locks.release_lock(second)


def test_a_failing_overlap_report_does_not_stop_a_finished_night(inputs, second_night, tmp_path, monkeypatch,
                                                               capsys):
    root = tmp_path / "root"
    shutil.copytree(second_night["root"], root)
    for name in (SUCCESS_FILE, NIGHTLY_SUMMARY_FILE):  # as if killed after its last stage, before its summary:
        (root / "runs" / "2024-07-02" / name).unlink()  # the rerun finishes the night, the report included

    def broken_report(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(nightly, "overlap_report", broken_report)
    assert nightly.main(nightly_argv(inputs, root, "2024-07-02")) == 0
    summary = summary_of(root, "2024-07-02")
    assert summary["overlap"]["error"] == "OSError: No space left on device"
    assert summary["overlap"]["against"] == "2024-07-01" and summary["overlap"]["overlap_at_k"] is None
    assert os.path.exists(root / "runs" / "2024-07-02" / SUCCESS_FILE)
    assert versions.read_current(str(root / "index")).version == summary["versions"]["index"]
    assert "the report failed (OSError: No space left on device)" in capsys.readouterr().out


def _upload_tree(gcs, local_dir, prefix: str) -> str:
    bucket = gcs.client.bucket(gcs.bucket)
    for folder, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(folder, name)
            bucket.blob(f"{prefix}/{os.path.relpath(path, local_dir)}").upload_from_filename(path)
    return gcs.uri(prefix)


def test_the_whole_chain_runs_on_gcs(inputs, gcs_emulator):
    """Catalog, model, history, embeddings, index and candidates all on gs:// URIs of a local GCS server.

    gcp-storage-emulator, because Beam's file sinks finalise with batch requests that fake-gcs-server lacks;
    the lock's preconditions are tested against fake-gcs-server above."""
    gcs = gcs_emulator
    catalog = _upload_tree(gcs, inputs["root"] / "catalog", "in/catalog")
    model = _upload_tree(gcs, inputs["model"], "in/model")
    gcs.client.bucket(gcs.bucket).blob("in/history.csv").upload_from_filename(inputs["history"])
    root = gcs.uri("nightly")
    argv = nightly_argv(inputs, root, "2024-07-01", catalog=f"{catalog}/catalog.csv", history=gcs.uri("in/history.csv"))
    argv[argv.index("--model") + 1] = model
    assert nightly.main(argv) == 0
    names = {blob.name for blob in gcs.client.list_blobs(gcs.bucket, prefix="nightly/")}
    version = versions.read_current(f"{root}/index").version
    assert {f"nightly/index/{INDEX_CURRENT_FILE}", f"nightly/index/{version}/manifest.json",
            "nightly/runs/2024-07-01/_SUCCESS", "nightly/runs/2024-07-01/embeddings/_SUCCESS",
            "nightly/runs/2024-07-01/candidates/_SUCCESS"} <= names
    assert any(name.startswith("nightly/runs/2024-07-01/candidates/user/") for name in names)
    summary = json.loads(gcs.client.bucket(gcs.bucket).blob("nightly/runs/2024-07-01/summary.json")
                         .download_as_bytes())
    assert summary["counts"]["titles"] == N_TITLES and summary["versions"]["index"] == version
    assert summary["stages"]["index"]["version_dir"].startswith("gs://")
    assert f"nightly/{NIGHTLY_LOCK_FILE}" not in names


def test_an_older_night_cannot_replace_a_newer_live_index_unless_allowed(inputs, first_night, tmp_path, capsys):
    """`nightly --date 2024-07-01` after a later night used to exit 0 and put the older night's index live."""
    root = tmp_path / "root"
    shutil.copytree(first_night, root)
    current = (root / "index" / INDEX_CURRENT_FILE).read_bytes()
    before = snapshot(root)
    # (evaluation off: it has no part in which index goes live)
    assert nightly.main(nightly_argv(inputs, root, "2024-06-30", *NO_EVALUATION)) == nightly.EXIT_STAGE_FAILED
    err = capsys.readouterr().err.strip()
    assert err.startswith("posters nightly 2024-06-30: ") and "published for 2024-07-01, later than 2024-06-30" in err
    assert "--allow-older" in err and "\n" not in err
    assert snapshot(root) == before  # refused before any work: no run directory, CURRENT as it was
    assert versions.read_current(str(root / "index")).run_date == "2024-07-01"

    assert nightly.main(nightly_argv(inputs, root, "2024-06-30", *NO_EVALUATION, "--allow-older")) == 0
    pointer = versions.read_current(str(root / "index"))
    summary = summary_of(root, "2024-06-30")
    assert (pointer.run_date, pointer.version) == ("2024-06-30", summary["versions"]["index"])
    assert summary["stages"]["evaluate"]["ran"] and summary["stages"]["evaluate"]["skipped"] == (
        "nightly.evaluate is false")  # the stage records why it did nothing
    assert (root / "index" / INDEX_CURRENT_FILE).read_bytes() != current


@pytest.mark.parametrize("date", ["2026-W01-5", "20260102", "2026-1-2", "2026-02-30", "yesterday"])
def test_a_date_not_written_yyyy_mm_dd_is_a_one_line_error(inputs, tmp_path, capsys, date):
    """`date.fromisoformat` also takes 2026-W01-5 and 20260102: a second run directory for the same day."""
    assert nightly.main(nightly_argv(inputs, tmp_path / "root", date)) == nightly.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err == f"posters nightly: --date {date!r}: expected a date as YYYY-MM-DD, e.g. 2026-01-02"
    assert not os.path.exists(tmp_path / "root")


def test_a_root_that_holds_an_input_is_refused_before_any_work(inputs, tmp_path, capsys):
    shutil.copytree(inputs["root"] / "catalog", tmp_path / "catalog")
    before = snapshot(tmp_path)
    catalog = str(tmp_path / "catalog" / "catalog.csv")
    assert nightly.main(nightly_argv(inputs, tmp_path, "2024-07-01", catalog=catalog)) == nightly.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posters nightly: --root {tmp_path} contains the input --catalog {catalog}")
    model_root = os.path.join(inputs["model"], "nightly")
    assert nightly.main(nightly_argv(inputs, model_root, "2024-07-01")) == nightly.EXIT_USAGE
    assert "lies inside the input --model" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not os.path.exists(model_root)


def test_markers_are_relative_to_the_root_so_a_copied_root_reads_its_own_outputs(inputs, failed_evaluation_gate,
                                                                                   failed_recall_gate, tmp_path):
    """Markers used to hold `--root` as given: a copied root resumed from the original's embeddings. The original
    here is the failed recall gate's root (its embed marker written under the failed evaluation gate's root, which
    it was copied from)."""
    original, copy = failed_recall_gate[0], tmp_path / "copy"
    marker = json.loads((original / "runs" / "2024-07-02" / "stages" / "embed.json").read_text())
    assert (marker["out"], marker["previous"]) == ("runs/2024-07-02/embeddings", "runs/2024-07-01/embeddings")
    assert marker["relative_to_root"] == ["out", "previous"]
    shutil.copytree(original, copy)
    # The copy must not need anything of either original's: both are moved away (and put back for the other tests).
    originals = [original, failed_evaluation_gate[0]]
    for path in originals:
        path.rename(path.with_name(path.name + "-away"))
    try:
        assert nightly.main(nightly_argv(inputs, copy, "2024-07-02")) == 0
    finally:
        for path in originals:
            path.with_name(path.name + "-away").rename(path)
    summary = summary_of(copy, "2024-07-02")
    assert {s: info["ran"] for s, info in summary["stages"].items()} == {"embed": False, "evaluate": False,
                                                                         "index": True, "candidates": True}
    embeddings = str(copy / "runs" / "2024-07-02" / "embeddings")
    assert summary["stages"]["embed"]["out"] == embeddings
    assert summary["stages"]["embed"]["previous"] == str(copy / "runs" / "2024-07-01" / "embeddings")
    manifest = json.loads((copy / "index" / summary["versions"]["index"] / "manifest.json").read_text())
    assert manifest["embeddings_files"] and all(path.startswith(embeddings + "/")
                                                for path in manifest["embeddings_files"])
    assert summary["stages"]["index"]["version_dir"] == str(copy / "index" / summary["versions"]["index"])


def test_a_finished_night_removes_what_killed_runs_left_and_reports_it(second_night):
    root, killed_build, staging = second_night["root"], second_night["killed_build"], second_night["staging"]
    summary = summary_of(root, "2024-07-02")
    assert {(item["kind"], item["uri"]) for item in summary["gc"]["removed"]} == {
        ("partial version", str(killed_build)), ("staging directory", str(staging))}
    assert not killed_build.exists() and not staging.exists() and second_night["recent"].exists()
    assert f"  gc: removed partial version {killed_build}" in second_night["printed"]
    live = versions.read_current(str(root / "index"))
    assert all((root / "index" / version / "manifest.json").exists() for version in (live.version, *live.history))


def test_a_failed_evaluation_gate_stops_the_night_before_anything_is_published(first_night, failed_evaluation_gate):
    root, recall, code = failed_evaluation_gate
    assert recall < 1.0  # what makes the gate below one the night cannot pass
    assert code == nightly.EXIT_STAGE_FAILED
    state = RunState(str(root / "runs" / "2024-07-02"))
    assert state.stage_result("embed") is not None and state.stage_result("evaluate") is None
    current = (first_night / "index" / INDEX_CURRENT_FILE).read_bytes()
    assert (root / "index" / INDEX_CURRENT_FILE).read_bytes() == current
    assert not (root / "runs" / "2024-07-02" / "candidates").exists()
