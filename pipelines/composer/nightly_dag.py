"""The nightly chain on Cloud Composer (Airflow 3): embed → evaluate → index → candidates; embed, index and candidates
each a Dataflow Flex Template job.

Copy this file into the Composer environment's `dags/` folder. It imports nothing of this package (Composer's
workers do not have it): the stages run as Flex Template launches (`flex_template/<stage>_metadata.json`,
built by `make flex-templates`), and the steps between them run the worker image's `posters` command in a pod:

    embed ─▶ embed_publish ─▶ evaluate (gates) ─▶ index ─▶ index_publish (recall gate, fenced CURRENT swap)
          ─▶ candidates ─▶ candidates_publish ─▶ overlap_report

The pod steps are `posters` commands of pipelines/nightly/steps.py (`posters embed publish`, `posters nightly
evaluate`, `posters index publish`, `posters candidates publish`, `posters nightly report`).

Each Dataflow task launches its stage's template and waits (deferred) for the job to finish; a failed job fails
the task, and nothing downstream runs, so a failed gate leaves the published index as it was. The run's date
is its logical date (`{{ ds }}`); job names are `posters-<stage>-<yyyymmdd>-<hash of the stage's parameters>`,
the same for every retry of the same run (`append_job_name=False`), so Dataflow refuses a second copy of a job
that is still running.

Settings, first found wins: the run's params (trigger with conf), then the Airflow Variable `posters_<name>`,
then the default below. `posters_bucket` names a `gs://` prefix holding `catalog/`, `training/model`,
`history/`, `templates/` and `nightly/`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.sdk import DAG, Param

DAG_ID = "posters_nightly"
STAGES = ("embed", "index", "candidates")  # preprocess is not nightly (it feeds training)
DEFAULTS = {
    "project": "YOUR_PROJECT",
    "region": "us-central1",
    "bucket": "gs://YOUR_BUCKET/posters",
    "worker_image": "us-central1-docker.pkg.dev/YOUR_PROJECT/posters/worker:latest",
    "service_account": "poster-similarity@YOUR_PROJECT.iam.gserviceaccount.com",
    "config": "configs/dataflow.yaml",
}
# Composer 3 runs KubernetesPodOperator pods in this namespace with this kube config (Composer's documentation).
POD_NAMESPACE = "composer-user-workloads"
POD_KUBE_CONFIG = "/home/airflow/composer_kube_config"
JOB_TIMEOUTS = {"embed": dt.timedelta(hours=4), "index": dt.timedelta(hours=2), "candidates": dt.timedelta(hours=3)}
STEP_TIMEOUT = dt.timedelta(minutes=45)


def setting(name: str) -> str:
    """The Jinja expression (without braces) for a setting: param, then Variable, then default."""
    return f"(params.{name} or var.value.get('posters_{name}', '{DEFAULTS[name]}'))"


def templated(name: str) -> str:
    return "{{ " + setting(name) + " }}"


BUCKET = templated("bucket")
ROOT = f"{BUCKET}/nightly"
RUN_DIR = f"{ROOT}/runs/{{{{ ds }}}}"


def stage_parameters(stage: str) -> dict[str, str]:
    """The Flex Template parameters of `stage` (the names in flex_template/<stage>_metadata.json)."""
    common = {"config": templated("config"), "date": "{{ ds }}", "job_spec_out": f"{RUN_DIR}/jobs/{stage}.json"}
    inputs = {
        "embed": {"catalog": f"{BUCKET}/catalog/catalog.csv", "model": f"{BUCKET}/training/model",
                  "previous_runs": f"{ROOT}/runs",  # the launcher takes the last finished night's embeddings
                  "out": f"{RUN_DIR}/embeddings"},
        "index": {"embeddings": f"{RUN_DIR}/embeddings", "out": f"{ROOT}/index"},
        "candidates": {"index": f"{ROOT}/index", "embeddings": f"{RUN_DIR}/embeddings",
                       "history": f"{BUCKET}/history/watch_history.parquet", "out": f"{RUN_DIR}/candidates"},
    }[stage]
    return {**inputs, **common}


def posters_job_name(stage: str, ds: str, parameters: dict) -> str:
    """A macro: `posters-<stage>-<yyyymmdd>-<12 hex>`, a hash of the rendered parameters and settings (a valid
    Dataflow job name, the same for every try of a run, new when an input, the config or the image changes)."""
    digest = hashlib.sha256(json.dumps([stage, parameters], sort_keys=True).encode("utf-8")).hexdigest()
    return f"posters-{stage}-{ds.replace('-', '')}-{digest[:12]}"


def job_name_template(stage: str) -> str:
    rendered = ", ".join(f"'{key}': {setting(key)}" for key in ("project", "region", "worker_image", "config"))
    return "{{ posters_job_name('" + stage + "', ds, {" + rendered + ", 'bucket': " + setting("bucket") + "}) }}"


def launch_body(stage: str) -> dict:
    """The `flexTemplates.launch` request body for `stage` (REST: LaunchFlexTemplateParameter)."""
    return {"launchParameter": {
        "jobName": job_name_template(stage),
        "containerSpecGcsPath": f"{BUCKET}/templates/{stage}.json",
        "parameters": stage_parameters(stage),
        "environment": {
            "sdkContainerImage": templated("worker_image"),
            "serviceAccountEmail": templated("service_account"),
            "tempLocation": f"{BUCKET}/tmp",
            "stagingLocation": f"{BUCKET}/staging",
            "additionalUserLabels": {"app": "posters", "stage": stage, "run-date": "{{ ds }}"},
        },
    }}


def dataflow_task(stage: str) -> DataflowStartFlexTemplateOperator:
    return DataflowStartFlexTemplateOperator(
        task_id=stage, body=launch_body(stage), project_id=templated("project"), location=templated("region"),
        append_job_name=False,  # the deterministic name is the point: no random suffix
        deferrable=True, poll_sleep=60, cancel_on_kill=True, execution_timeout=JOB_TIMEOUTS[stage])


def posters_step(task_id: str, arguments: list[str]) -> KubernetesPodOperator:
    """`posters ARGS…` in the worker image (pipelines/nightly/steps.py)."""
    return KubernetesPodOperator(
        task_id=task_id, name=f"posters-{task_id.replace('_', '-')}", image=templated("worker_image"),
        cmds=["posters"], arguments=arguments, namespace=POD_NAMESPACE, config_file=POD_KUBE_CONFIG,
        kubernetes_conn_id="kubernetes_default", get_logs=True, on_finish_action="delete_pod",
        execution_timeout=STEP_TIMEOUT)


def publish_arguments(stage: str) -> list[str]:
    """`posters <stage> publish`: the stage's accounting and gate on the job's output, then its publish, fenced
    by the nightly lock (a publish whose lock was taken over is refused)."""
    return [stage, "publish", "--config", templated("config"), "--job-spec", f"{RUN_DIR}/jobs/{stage}.json",
            "--job-id", "{{ ti.xcom_pull(task_ids='" + stage + "', key='job_id') }}",
            "--root", ROOT, "--date", "{{ ds }}", "--owner", "composer:{{ dag.dag_id }}:{{ run_id }}"]


with DAG(
    dag_id=DAG_ID,
    description="posters nightly: embed → evaluate → index → candidates on Dataflow, publish steps between them",
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # one night at a time; the nightly lock fences anything outside Composer
    dagrun_timeout=dt.timedelta(hours=10),  # the night's SLA: the run fails if not finished by then
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10), "retry_exponential_backoff": True},
    params={name: Param(None, type=["null", "string"], description=f"default: Variable posters_{name}, "
                        f"else {default}") for name, default in DEFAULTS.items()},
    user_defined_macros={"posters_job_name": posters_job_name},
    tags=["posters"],
) as dag:
    embed, index, candidates = (dataflow_task(stage) for stage in STAGES)
    embed_publish, index_publish, candidates_publish = (posters_step(f"{stage}_publish", publish_arguments(stage))
                                                        for stage in STAGES)
    evaluate = posters_step("evaluate", [
        "nightly", "evaluate", "--config", templated("config"), "--root", ROOT, "--date", "{{ ds }}",
        "--catalog", stage_parameters("embed")["catalog"], "--model", stage_parameters("embed")["model"],
        "--history", stage_parameters("candidates")["history"]])
    overlap_report = posters_step("overlap_report", [
        "nightly", "report", "--config", templated("config"), "--root", ROOT, "--date", "{{ ds }}"])
    embed >> embed_publish >> evaluate >> index >> index_publish >> candidates >> candidates_publish >> overlap_report
