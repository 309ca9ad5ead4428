"""Run by the Airflow venv's python (not by pytest): loads the nightly DAG with DagBag once and writes, as JSON, its
import errors, tasks, dependencies and settings, and every templated field rendered for one logical date under
each of several settings (Variables and run params), in the order given.

    .venv-airflow/bin/python dag_probe.py DAG_FILE LOGICAL_DATE '[{"variables": {...}, "params": {...}}, ...]' OUT.json

Rendering uses the DAG's own Jinja environment (its user-defined macros included) with a context built here:
Variables and XComs come from the JSON argument instead of a database. Rendering does not change the loaded tasks
(`render_template` returns the rendered value), so one load answers every setting.
"""
import json
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.execution_time import macros


class Variables:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


class VariableAccessor:
    def __init__(self, values):
        self.value = Variables(values)


class TaskInstance:
    def xcom_pull(self, task_ids=None, key="return_value"):
        return f"xcom:{task_ids}:{key}"


def render(dag, logical_date, overrides):
    """{task_id: {"operator", "downstream", …, "rendered": {field: value}}} for one setting's Variables and params."""
    params = {name: overrides.get("params", {}).get(name, param.value) for name, param in dag.params.items()}
    context = {"ds": logical_date, "ds_nodash": logical_date.replace("-", ""), "params": params, "dag": dag,
               "var": VariableAccessor(overrides.get("variables", {})), "macros": macros, "ti": TaskInstance(),
               "run_id": f"scheduled__{logical_date}T02:30:00+00:00"}
    env = dag.get_template_env()
    tasks = {}
    for task in dag.tasks:
        rendered = {field: task.render_template(getattr(task, field), context, env) for field in task.template_fields
                    if getattr(task, field, None) not in (None, "", [], {})}
        tasks[task.task_id] = {
            "operator": type(task).__name__, "downstream": sorted(task.downstream_task_ids),
            "retries": task.retries, "execution_timeout_s": task.execution_timeout.total_seconds()
            if task.execution_timeout else None,
            "append_job_name": getattr(task, "append_job_name", None), "deferrable": getattr(task, "deferrable", None),
            "rendered": rendered,
        }
    return tasks


def describe(dag_file, logical_date, settings):
    bag = DagBag(dag_folder=dag_file, safe_mode=False)
    result = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
    if bag.import_errors:
        return result
    (dag,) = bag.dags.values()
    result.update(dag_id=dag.dag_id, schedule=str(getattr(dag, "schedule", None)), max_active_runs=dag.max_active_runs,
                  dagrun_timeout_s=dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
                  catchup=dag.catchup,
                  renders=[render(dag, logical_date, overrides) for overrides in settings])
    return result


if __name__ == "__main__":
    with open(sys.argv[4], "w") as out:  # not stdout: Airflow logs there
        json.dump(describe(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])), out, default=str)
