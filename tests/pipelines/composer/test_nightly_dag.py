"""The Composer DAG, loaded with Airflow's DagBag in the project's Airflow venv (`make airflow-venv`, kept apart
from the Beam venv): no import errors, one task per nightly stage plus the steps between them, in order, and
its templated fields rendered for a logical date. `dag_probe.py` runs inside that venv and reports as JSON."""
import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
AIRFLOW_VENV = REPO / ".venv-airflow"
AIRFLOW_PYTHON = AIRFLOW_VENV / "bin" / "python"
DAG_FILE = REPO / "pipelines" / "composer" / "nightly_dag.py"
PROBE = Path(__file__).with_name("dag_probe.py")
DATE = "2026-12-01"
ORDER = ["embed", "embed_publish", "evaluate", "index", "index_publish", "candidates", "candidates_publish",
         "overlap_report"]


def ensure_airflow_venv() -> None:
    """Builds .venv-airflow with `make airflow-venv` when it is missing or older than its requirements (a few
    minutes); fails with the make output, never skips. A file lock keeps parallel test workers to one build."""
    with open(REPO / ".venv-airflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        up_to_date = subprocess.run(["make", "-q", ".venv-airflow/.installed"], cwd=REPO,
                                    capture_output=True).returncode == 0
        if up_to_date and AIRFLOW_PYTHON.exists():
            return
        build = subprocess.run(["make", "airflow-venv"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0 and AIRFLOW_PYTHON.exists(), (
        f"the Airflow venv is missing and `make airflow-venv` failed (run it in {REPO}):\n{build.stdout[-2000:]}\n"
        f"{build.stderr[-3000:]}")


PROD = {"variables": {"posters_bucket": "gs://prod-bucket/posters", "posters_project": "poster-prod"}}
# The settings every test renders the DAG under, all from one DagBag load (`loaded`): a load costs seconds.
SETTINGS = {
    "prod": PROD,
    "other": {"variables": {"posters_bucket": "gs://prod-bucket/posters"},
              "params": {"worker_image": "us-central1-docker.pkg.dev/p/posters/worker:v2", "project": "poster-prod"}},
    "defaults": {},
    "param": {"variables": {"posters_bucket": "gs://from-variable/p"}, "params": {"bucket": "gs://from-param/p"}},
}


def probe(tmp_path, settings: dict[str, dict], hash_seed: str) -> dict:
    """One Airflow process (Python's hash seed `hash_seed`): the DAG loaded once, "renders" by setting's name."""
    ensure_airflow_venv()
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "dag.json"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow_home"), "PYTHONPATH": "", "PYTHONHASHSEED": hash_seed}
    result = subprocess.run([str(AIRFLOW_PYTHON), str(PROBE), str(DAG_FILE), DATE, json.dumps(list(settings.values())),
                             str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loaded = json.loads(out.read_text())
    loaded["renders"] = dict(zip(settings, loaded.get("renders", [])))
    return loaded


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return probe(tmp_path_factory.mktemp("dag"), SETTINGS, hash_seed="0")


@pytest.fixture(scope="module")
def dag(loaded):
    """The DAG rendered with the production Variables (`PROD`)."""
    return {**loaded, "tasks": loaded["renders"].get("prod", {})}


def test_the_dag_loads_without_import_errors(dag):
    assert dag["import_errors"] == {} and dag["dags"] == ["posters_nightly"]


def test_one_dataflow_task_per_nightly_stage_and_a_pod_step_after_each(dag):
    operators = {task_id: task["operator"] for task_id, task in dag["tasks"].items()}
    assert operators == {
        "embed": "DataflowStartFlexTemplateOperator", "index": "DataflowStartFlexTemplateOperator",
        "candidates": "DataflowStartFlexTemplateOperator", "embed_publish": "KubernetesPodOperator",
        "index_publish": "KubernetesPodOperator", "candidates_publish": "KubernetesPodOperator",
        "evaluate": "KubernetesPodOperator",
        "overlap_report": "KubernetesPodOperator"}
    assert "preprocess" not in dag["tasks"]  # preprocess feeds training; it is not nightly


def test_the_tasks_run_in_one_chain(dag):
    downstream = {task_id: task["downstream"] for task_id, task in dag["tasks"].items()}
    assert downstream == {task: ORDER[i + 1:i + 2] for i, task in enumerate(ORDER)}


def test_retries_timeouts_and_one_run_at_a_time(dag):
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False and dag["dagrun_timeout_s"] == 10 * 3600
    assert all(task["retries"] == 2 and task["execution_timeout_s"] for task in dag["tasks"].values())


def test_each_dataflow_task_launches_its_stage_template_for_the_logical_date(dag):
    for stage in ("embed", "index", "candidates"):
        task = dag["tasks"][stage]
        assert task["append_job_name"] is False and task["deferrable"] is True  # waits on its job, name kept
        launch = task["rendered"]["body"]["launchParameter"]
        assert launch["containerSpecGcsPath"] == f"gs://prod-bucket/posters/templates/{stage}.json"
        assert launch["parameters"]["date"] == DATE
        assert launch["parameters"]["job_spec_out"] == f"gs://prod-bucket/posters/nightly/runs/{DATE}/jobs/{stage}.json"
        assert launch["environment"]["sdkContainerImage"].endswith("/posters/worker:latest")
        assert task["rendered"]["project_id"] == "poster-prod" and task["rendered"]["location"] == "us-central1"
    embed = dag["tasks"]["embed"]["rendered"]["body"]["launchParameter"]["parameters"]
    assert embed["out"] == f"gs://prod-bucket/posters/nightly/runs/{DATE}/embeddings"
    assert embed["previous_runs"] == "gs://prod-bucket/posters/nightly/runs" and "previous" not in embed


def test_job_names_are_deterministic_valid_and_change_with_the_settings(loaded, dag, tmp_path):
    """Deterministic across processes: a second Airflow process, with another hash seed, names the jobs alike."""
    import re

    names = {stage: dag["tasks"][stage]["rendered"]["body"]["launchParameter"]["jobName"]
             for stage in ("embed", "index", "candidates")}
    for stage, name in names.items():
        assert re.fullmatch(rf"posters-{stage}-20261201-[0-9a-f]{{12}}", name)
    again = probe(tmp_path / "again", {"prod": PROD}, hash_seed="1")["renders"]["prod"]
    assert {s: again[s]["rendered"]["body"]["launchParameter"]["jobName"] for s in names} == names
    other = loaded["renders"]["other"]
    assert other["embed"]["rendered"]["body"]["launchParameter"]["jobName"] != names["embed"]


def test_a_run_param_beats_the_variable_which_beats_the_default(loaded):
    defaults = loaded["renders"]["defaults"]["index"]["rendered"]["body"]["launchParameter"]
    assert defaults["parameters"]["out"] == "gs://YOUR_BUCKET/posters/nightly/index"
    rendered = loaded["renders"]["param"]["index"]["rendered"]["body"]["launchParameter"]
    assert rendered["parameters"]["out"] == "gs://from-param/p/nightly/index"


def test_the_steps_between_jobs_run_posters_in_the_worker_image_with_the_job_id(dag):
    publish = dag["tasks"]["index_publish"]["rendered"]
    assert publish["image"].endswith("/posters/worker:latest") and publish["cmds"] == ["posters"]
    arguments = publish["arguments"]
    assert arguments[:2] == ["index", "publish"]
    flags = dict(zip(arguments[2::2], arguments[3::2]))
    assert flags["--job-spec"] == f"gs://prod-bucket/posters/nightly/runs/{DATE}/jobs/index.json"
    assert flags["--job-id"] == "xcom:index:job_id"  # the job id the Dataflow task pushed
    assert flags["--date"] == DATE and flags["--root"] == "gs://prod-bucket/posters/nightly"
    assert flags["--owner"] == f"composer:posters_nightly:scheduled__{DATE}T02:30:00+00:00"
    report = dag["tasks"]["overlap_report"]["rendered"]["arguments"]
    assert report[:2] == ["nightly", "report"] and DATE in report


def test_the_dag_file_imports_nothing_of_this_package():
    import ast

    tree = ast.parse(DAG_FILE.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("pipelines", "trainer", "configs")}


def test_every_command_the_dag_runs_is_a_posters_command_that_takes_its_rendered_flags(dag):
    from pipelines import cli
    from pipelines.nightly import steps

    pods = {task_id: task["rendered"] for task_id, task in dag["tasks"].items()
            if task["operator"] == "KubernetesPodOperator"}
    assert set(pods) == {"embed_publish", "evaluate", "index_publish", "candidates_publish", "overlap_report"}
    for task_id, rendered in pods.items():
        assert rendered["cmds"] == ["posters"]
        arguments = rendered["arguments"]
        command = " ".join(arguments[:2])
        assert command in cli.STEPS, f"{task_id}: `posters {command}` is not a command"
        function, rest = cli.command_for(arguments)
        assert rest == arguments[2:] and callable(function)
        args, unknown = steps.parser_for(command).parse_known_args(rest)  # required flags present, none unknown
        assert unknown == [] and args.date == DATE and args.root == "gs://prod-bucket/posters/nightly", task_id
