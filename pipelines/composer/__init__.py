"""The nightly chain as a Cloud Composer (Airflow 3) DAG: nightly_dag.py (loaded by Composer, not imported here)."""
