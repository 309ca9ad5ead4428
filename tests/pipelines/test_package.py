"""What importing `pipelines` does to a process (`pipelines/__init__.py`): every command, test and worker gets it."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _printed(code: str, **env: str) -> str:
    base = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_faiss_loads_with_the_passive_openmp_wait_policy_unless_the_environment_sets_one():
    check = "import os, sys, pipelines.index.faiss_index; print(os.environ['OMP_WAIT_POLICY'], 'faiss' in sys.modules)"
    assert _printed(check) == "PASSIVE True"
    assert _printed(check, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE True"


def test_objects_left_at_exit_are_frozen_before_pythons_last_collection():
    # atexit runs its handlers last registered first: one registered before the import runs after the package's.
    check = ("import atexit, gc\n"
             "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
             "import pipelines\n"
             "print('frozen before exit:', gc.get_freeze_count() > 0)")
    assert _printed(check).splitlines() == ["frozen before exit: False", "frozen at exit: True"]


def test_a_process_that_loaded_duckdb_exits_without_its_leak_report():
    # duckdb's bindings report objects still alive at exit: frozen ones would be reported as leaks.
    completed = subprocess.run([sys.executable, "-c", "import pipelines, duckdb; duckdb.sql('SELECT 1').fetchall()"],
                               cwd=REPO, capture_output=True, text=True, check=True)
    assert "leaked" not in completed.stderr, completed.stderr[-500:]
