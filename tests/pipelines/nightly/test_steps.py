"""The steps the Composer DAG runs between its Dataflow jobs (`posters embed publish`, `nightly evaluate`, `index
publish`, `candidates publish`, `nightly report`), run here in the DAG's order after each stage's Flex Template
launcher on DirectRunner: a whole night published through them, a retry that does nothing, a publish refused
while another run holds the lock, a failed Dataflow job (recorded `jobs.get` responses) that publishes nothing."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import cli
from pipelines.common import dataflow_jobs, locks, storage, versions
from pipelines.config import load_config
from pipelines.contracts import INDEX_MANIFEST_FILE, NIGHTLY_LOCK_FILE, SUCCESS_FILE
from pipelines.nightly import steps
from pipelines.nightly.run_state import RunState
from tests.flex_template.test_launch import launch
from tests.pipelines.nightly.conftest import N_TITLES

REPO = Path(__file__).resolve().parents[3]
RESPONSES = REPO / "tests" / "pipelines" / "common" / "dataflow_responses"
DATE = "2026-12-01"
FAST = ["embed.min_batch_size=4", "embed.max_batch_size=8", "candidates.k=5", "nightly.overlap_k=5",
        # 16 titles and an untrained model: evaluate every title, a quick map with 3 posters on it, 3 titles' grids
        # in the report, and gates it can pass.
        "evaluate.retrieval_split=all", "evaluate.k=5", "evaluate.map_projection=pca", "evaluate.map_posters=3",
        "evaluate.report_titles=3",
        "evaluate.min_near_duplicate_recall_at_1=null", "evaluate.min_hit_rate_vs_popularity=null",
        "evaluate.max_drop_from_previous=null"]


@pytest.fixture(scope="module")
def step_inputs(inputs):
    """The nightly inputs and a config file with the overrides (the launchers take a config file only)."""
    config = inputs["root"] / "steps.yaml"
    config.write_text(yaml.safe_dump(load_config("configs/local.yaml", FAST).model_dump(mode="json")))
    return {**inputs, "config": str(config)}


def step(name: str, inputs, root, *extra) -> int:
    return cli.main([*name.split(), "--config", inputs["config"], "--root", str(root), "--date", DATE, *extra])


def launcher(stage: str, inputs, root, **parameters) -> None:
    flags = [arg for name, value in parameters.items() for arg in (f"--{name}", str(value))]
    assert launch.main([stage, "--config", inputs["config"], "--date", DATE, *flags, "--job_spec_out",
                        str(root / "runs" / DATE / "jobs" / f"{stage}.json")]) == 0


@pytest.fixture(scope="module")
def night(step_inputs, tmp_path_factory):
    """One night as the DAG runs it: launcher, then its step, stage after stage."""
    inputs, root = step_inputs, tmp_path_factory.mktemp("composer_root")
    run_dir = root / "runs" / DATE
    launcher("embed", inputs, root, catalog=inputs["catalog"], model=inputs["model"], out=run_dir / "embeddings")
    assert step("embed publish", inputs, root, "--job-id", "None") == 0  # an XCom with no value renders "None"
    assert step("nightly evaluate", inputs, root, "--catalog", inputs["catalog"], "--model", inputs["model"],
                "--history", inputs["history"]) == 0
    launcher("index", inputs, root, embeddings=run_dir / "embeddings", out=root / "index")
    assert step("index publish", inputs, root, "--owner", "composer:posters_nightly:manual") == 0
    launcher("candidates", inputs, root, index=root / "index", embeddings=run_dir / "embeddings",
             history=inputs["history"], out=run_dir / "candidates")
    assert step("candidates publish", inputs, root) == 0
    assert step("nightly report", inputs, root) == 0
    return root


def test_the_dags_steps_publish_a_whole_night(night):
    state = RunState(str(night / "runs" / DATE), str(night))
    summary = state.summary()
    assert set(summary["stages"]) == {"embed", "evaluate", "index", "candidates"}
    assert summary["counts"]["embeddings"]["new"] == N_TITLES and summary["counts"]["titles"] == N_TITLES
    assert summary["counts"]["users"] == 12
    assert versions.read_current(str(night / "index")).version == summary["versions"]["index"]
    assert versions.read_current(str(night / "index")).run_date == DATE
    for stage in ("embed", "index", "candidates"):  # each marker names the job that made its output
        assert summary["jobs"][stage]["name"] == state.recorded_job(stage)["job_name"]
        assert summary["jobs"][stage]["name"].startswith(f"posters-{stage}-20261201-")
    assert (night / "runs" / DATE / "embeddings" / SUCCESS_FILE).exists()
    assert (night / "runs" / DATE / "candidates" / SUCCESS_FILE).exists()
    assert not list((night / "runs" / DATE).glob(".staging-*")), "every staged output was published"
    assert locks.read_lock(str(night / NIGHTLY_LOCK_FILE)) is None, "every step released the lock"


def test_a_retry_of_a_published_step_changes_nothing(night, step_inputs, capsys):
    before = versions.read_current(str(night / "index"))
    assert step("index publish", step_inputs, night) == 0
    assert "published by an earlier try" in capsys.readouterr().out
    assert versions.read_current(str(night / "index")) == before
    assert step("nightly report", step_inputs, night) == 0


@pytest.fixture(scope="module")
def index_build(night, step_inputs, tmp_path_factory):
    """A root with an index version built by the index launcher (not published), built once."""
    root = tmp_path_factory.mktemp("index_build")
    launcher("index", step_inputs, root, embeddings=night / "runs" / DATE / "embeddings", out=root / "index")
    return root


@pytest.fixture
def built_index(index_build, tmp_path):
    """A copy of `index_build` of its own, its job record pointing into the copy."""
    root = tmp_path / "root"
    shutil.copytree(index_build, root)
    record = root / "runs" / DATE / "jobs" / "index.json"
    record.write_text(record.read_text().replace(str(index_build), str(root)))
    return root


def test_a_publish_is_refused_while_another_run_holds_the_lock(built_index, step_inputs, capsys):
    holder = locks.acquire_lock(str(built_index / NIGHTLY_LOCK_FILE), "nightly 2026-12-01 (cron)")
    assert step("index publish", step_inputs, built_index) == 3
    assert "nightly 2026-12-01 (cron)" in capsys.readouterr().err
    assert versions.read_current(str(built_index / "index")) is None
    locks.release_lock(holder)
    assert step("index publish", step_inputs, built_index) == 0
    assert versions.read_current(str(built_index / "index")) is not None


def test_an_index_below_the_recall_gate_is_not_published_and_its_version_is_deleted(built_index, step_inputs):
    version_dir = Path(RunState(str(built_index / "runs" / DATE)).recorded_job("index")["outputs"]["version_dir"])
    manifest = json.loads((version_dir / INDEX_MANIFEST_FILE).read_text())
    (version_dir / INDEX_MANIFEST_FILE).write_text(json.dumps({**manifest, "recall_at_10": 0.5}))
    assert step("index publish", step_inputs, built_index) == 1
    assert versions.read_current(str(built_index / "index")) is None and not version_dir.exists()


def as_dataflow_job(root: Path, job_id: str) -> RunState:
    """The launcher's record as a Dataflow launch from a template leaves it: runner Dataflow, no job id."""
    state = RunState(str(root / "runs" / DATE))
    record = state.recorded_job("index")
    state.record_job("index", {**record, "runner": "DataflowRunner", "job_id": None, "project": "poster-prod",
                               "region": "us-central1"})
    return state


def polled_get(name: str, asked: list):
    answers = iter(json.loads((RESPONSES / name).read_text()))

    def get_job(project, region, job_id, session=None):
        asked.append((project, region, job_id))
        return next(answers)
    return get_job


def test_a_failed_dataflow_job_publishes_nothing_and_its_id_is_recorded_first(built_index, step_inputs, monkeypatch):
    job_id = "2026-12-01_02_41_07-8411936245017093311"
    state, asked = as_dataflow_job(built_index, job_id), []
    monkeypatch.setattr(dataflow_jobs, "get_job", polled_get("jobs_get_until_failed.json", asked))
    monkeypatch.setattr(steps, "POLL_S", 0.0)
    assert step("index publish", step_inputs, built_index, "--job-id", job_id) == 1
    assert asked == [("poster-prod", "us-central1", job_id)] * 2  # running, then failed
    assert state.recorded_job("index")["job_id"] == job_id and state.stage_result("index") is None
    assert versions.read_current(str(built_index / "index")) is None


def test_a_done_dataflow_job_is_waited_for_then_published(built_index, step_inputs, monkeypatch):
    job_id = "2026-12-01_02_41_07-8411936245017093311"
    state, asked = as_dataflow_job(built_index, job_id), []
    monkeypatch.setattr(dataflow_jobs, "get_job", polled_get("jobs_get_until_done.json", asked))
    monkeypatch.setattr(steps, "POLL_S", 0.0)
    assert step("index publish", step_inputs, built_index, "--job-id", job_id) == 0
    assert len(asked) == len(json.loads((RESPONSES / "jobs_get_until_done.json").read_text()))
    assert state.stage_result("index")["job"] == {"name": state.recorded_job("index")["job_name"], "id": job_id,
                                                  "state": "JOB_STATE_DONE"}
    assert versions.read_current(str(built_index / "index")).version == state.stage_result("index")["version"]
    assert storage.exists(str(built_index / "index" / versions.POINTER_FILE))
