"""The Flex Template launcher builds one stage's job, submits it with `pipeline.run()` and exits: on DirectRunner it
writes the job spec, the job's output lands in the job's staging location, nothing is published, and nothing
waited. The metadata files name exactly the parameters the launcher reads."""
import importlib.util
import json
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners import runner as beam_runner
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipelines.common import dataflow_jobs
from pipelines.config import load_config
from pipelines.synthetic.catalog import generate_catalog
from tests.pipelines.embed.tiny_model import export_tiny_model

REPO = Path(__file__).resolve().parents[2]
RESPONSES = REPO / "tests" / "pipelines" / "common" / "dataflow_responses"
DATE = "2026-12-01"


def load_launcher():
    spec = importlib.util.spec_from_file_location("flex_template_launch", REPO / "flex_template" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = load_launcher()


@pytest.fixture
def nothing_waits(monkeypatch):
    """Every PipelineResult.wait_until_finish the DirectRunner could return fails the test if called."""
    def waited(self, duration=None):
        raise AssertionError("the launcher waited for its job")
    for result_class in (beam_runner.PipelineResult, fn_runner.RunnerResult, direct_runner.DirectPipelineResult):
        monkeypatch.setattr(result_class, "wait_until_finish", waited)


@pytest.fixture(scope="module")
def embed_inputs(tmp_path_factory):
    model = str(tmp_path_factory.mktemp("model"))
    export_tiny_model(model, input_size=32, dim=16, seed=0)
    catalog = tmp_path_factory.mktemp("catalog")
    generate_catalog(catalog, n=6, seed=3, width=64, height=96)
    return str(catalog / "catalog.csv"), model


def test_the_embed_launcher_submits_writes_its_job_spec_and_does_not_wait(embed_inputs, tmp_path, nothing_waits):
    catalog, model = embed_inputs
    out, spec_path = tmp_path / "runs" / DATE / "embeddings", tmp_path / "runs" / DATE / "jobs" / "embed.json"
    argv = ["embed", "--config", "configs/local.yaml", "--date", DATE, "--catalog", catalog, "--model", model,
            "--out", str(out), "--job_spec_out", str(spec_path)]
    assert launch.main(argv) == 0

    spec = json.loads(spec_path.read_text())
    inputs = {"catalog": catalog, "model": model, "out": str(out), "previous": None, "previous_runs": None}
    fingerprint = dataflow_jobs.config_fingerprint(load_config("configs/local.yaml").model_dump(mode="json"), inputs)
    assert spec["stage"] == "embed" and spec["runner"] == "DirectRunner" and spec["job_id"] is None
    assert spec["job_name"] == dataflow_jobs.job_name("embed", DATE, fingerprint)
    assert spec["job_name"] == f"posters-embed-20261201-{fingerprint[:12]}"
    assert spec["fingerprint"] == fingerprint and spec["reused_existing_job"] is False
    assert spec["parameters"] == {**inputs, "config": "configs/local.yaml", "date": DATE}
    staging = Path(spec["outputs"]["staging"])
    assert staging == out.parent / f".staging-embeddings-{spec['job_name']}"
    assert list(staging.rglob("*.parquet")), "the job ran (DirectRunner runs it inside run()) into its staging"
    assert not out.exists(), "the launcher publishes nothing: that is the publish step's job"


def test_previous_runs_gives_the_last_finished_nights_embeddings_skipping_a_failed_night(tmp_path):
    runs = tmp_path / "runs"
    for date, finished in (("2026-11-28", True), ("2026-11-29", True), ("2026-11-30", False)):
        (runs / date / "embeddings").mkdir(parents=True)
        if finished:
            (runs / date / "_SUCCESS").write_text("{}")
    args, _ = launch.parse_launch_args("embed", ["--catalog", "c", "--model", "m", "--out", "o", "--date", DATE,
                                                 "--previous_runs", str(runs)])
    assert args.previous == str(runs / "2026-11-29" / "embeddings")  # 11-30 failed: not its half-written output
    args, _ = launch.parse_launch_args("embed", ["--catalog", "c", "--model", "m", "--out", "o",
                                                 "--date", "2026-11-28", "--previous_runs", str(runs)])
    assert args.previous is None  # the first night: everything is embedded
    with pytest.raises(SystemExit):
        launch.parse_launch_args("embed", ["--catalog", "c", "--model", "m", "--out", "o", "--previous", "p",
                                           "--previous_runs", str(runs)])


def test_the_template_stage_comes_from_posters_stage(monkeypatch):
    monkeypatch.setenv("POSTERS_STAGE", "index")
    assert launch.stage_and_argv(["--embeddings", "gs://b/e", "--out", "gs://b/i"]) == (
        "index", ["--embeddings", "gs://b/e", "--out", "gs://b/i"])
    assert launch.stage_and_argv(["candidates", "--out", "x"]) == ("candidates", ["--out", "x"])
    monkeypatch.setenv("POSTERS_STAGE", "nightly")
    with pytest.raises(SystemExit, match="POSTERS_STAGE"):
        launch.stage_and_argv(["--out", "x"])


def test_a_missing_required_parameter_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        launch.parse_launch_args("candidates", ["--index", "gs://b/i", "--out", "gs://b/c"])
    assert "--embeddings" in capsys.readouterr().err


def test_on_dataflow_a_running_job_of_the_same_name_is_reused_not_launched_again(monkeypatch, tmp_path):
    pages = [json.loads((RESPONSES / name).read_text()) for name in ("jobs_list_page1.json", "jobs_list_page2.json")]
    asked = []

    def list_job_pages(project, region, name, session=None):
        asked.append((project, region, name))
        return iter(pages)

    def no_submit(self, *args, **kwargs):
        raise AssertionError("a job of that name is running: nothing must be submitted")

    monkeypatch.setattr(launch.dataflow_jobs, "list_job_pages", list_job_pages)
    monkeypatch.setattr(beam.Pipeline, "run", no_submit)
    spec_path = tmp_path / "embed.json"
    job_id = launch.submit("embed", [
        "--catalog", "gs://b/catalog.csv", "--model", "gs://b/model", "--out", "gs://b/runs/2026-12-01/embeddings",
        "--date", DATE, "--job_spec_out", str(spec_path), "--runner=DataflowRunner", "--project=poster-prod",
        "--region=us-central1", "--job_name=posters-embed-20261201-3f2a9c41d0be"])
    assert job_id == "2026-12-01_02_41_07-8411936245017093311"
    assert asked == [("poster-prod", "us-central1", "posters-embed-20261201-3f2a9c41d0be")]
    spec = json.loads(spec_path.read_text())
    assert spec["reused_existing_job"] is True and spec["runner"] == "DataflowRunner" and spec["outputs"] is None


@pytest.mark.parametrize("stage", sorted(launch.STAGE_PARAMETERS))
def test_each_stage_metadata_file_names_every_parameter_its_launcher_reads(stage):
    metadata = json.loads((REPO / "flex_template" / f"{stage}_metadata.json").read_text())
    assert metadata["name"] == f"poster-similarity-{stage}" and metadata["description"]
    declared = {p["name"]: not p.get("isOptional", False) for p in metadata["parameters"]}
    assert declared == launch.parameters_of(stage)
    for parameter in metadata["parameters"]:
        assert parameter["label"] and parameter["helpText"]
        assert all(re.compile(regex) for regex in parameter.get("regexes", []))


def test_there_is_one_metadata_file_per_stage_and_no_nightly_template():
    assert sorted(p.name for p in (REPO / "flex_template").glob("*metadata.json")) == [
        "candidates_metadata.json", "embed_metadata.json", "index_metadata.json", "preprocess_metadata.json"]


def test_the_index_launcher_builds_a_version_directory_and_leaves_current_alone(tmp_path, nothing_waits):
    from pipelines.contracts import INDEX_MANIFEST_FILE
    from tests.pipelines.embeddings_fixture import title_ids, unit_vectors, write_embeddings

    embeddings = write_embeddings(str(tmp_path / "embeddings"), title_ids(300), unit_vectors(300), files=2)
    out, spec_path = tmp_path / "index", tmp_path / "jobs" / "index.json"
    assert launch.main(["index", "--config", "configs/local.yaml", "--date", DATE, "--embeddings", embeddings,
                        "--out", str(out), "--job_spec_out", str(spec_path)]) == 0
    spec = json.loads(spec_path.read_text())
    assert spec["stage"] == "index" and re.fullmatch(r"posters-index-20261201-[0-9a-f]{12}", spec["job_name"])
    version_dir = Path(spec["outputs"]["version_dir"])
    assert version_dir.parent == out and version_dir.name == spec["outputs"]["version"]
    manifest = json.loads((version_dir / INDEX_MANIFEST_FILE).read_text())
    assert manifest["count"] == 300 and "recall_at_10" in manifest
    assert sorted(p.name for p in out.iterdir()) == [version_dir.name], "no CURRENT: the gate and swap come later"


def test_a_rerun_finds_the_job_recorded_in_the_run_state_and_waits_for_it_instead_of_launching(monkeypatch, tmp_path):
    from pipelines.nightly.run_state import RunState

    running = json.loads((RESPONSES / "jobs_get_until_done.json").read_text())[2]  # JOB_STATE_RUNNING
    state = RunState(str(tmp_path / "runs" / DATE), str(tmp_path))
    state.record_job("embed", {"stage": "embed", "job_name": running["name"], "job_id": running["id"]})
    asked = []

    def get_job(project, region, job_id, session=None):
        asked.append((project, region, job_id))
        return running

    def nothing_else(*args, **kwargs):
        raise AssertionError("the recorded job is running: no lookup by name and no launch")

    monkeypatch.setattr(launch.dataflow_jobs, "get_job", get_job)
    monkeypatch.setattr(launch.dataflow_jobs, "list_job_pages", nothing_else)
    monkeypatch.setattr(beam.Pipeline, "run", nothing_else)
    job_id = launch.submit("embed", [
        "--catalog", "gs://b/catalog.csv", "--model", "gs://b/model", "--out", "gs://b/runs/2026-12-01/embeddings",
        "--date", DATE, "--job_spec_out", state.job_uri("embed"), "--runner=DataflowRunner",
        "--project=poster-prod", "--region=us-central1", f"--job_name={running['name']}"])
    assert job_id == running["id"] and asked == [("poster-prod", "us-central1", running["id"])]
    record = state.recorded_job("embed")
    assert record["job_id"] == running["id"] and record["reused_existing_job"] is True
