"""`posters bench scale-catalog`: the process-tree sampler and the growth figures (the stages are the real CLIs)."""
import os
import sys

import pytest

from pipelines.bench import scale_catalog

# A launcher that starts, from a thread (as Beam does), a worker holding ~60 MB, and waits for it.
LAUNCHER = """
import subprocess, sys, threading
worker = "import time; block = bytearray(60 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.0)"
thread = threading.Thread(target=lambda: subprocess.run([sys.executable, "-c", worker], check=True))
thread.start(); thread.join()
"""


def test_the_largest_worker_started_from_a_thread_is_sampled_apart_from_the_launcher(tmp_path):
    figures = scale_catalog.measure_command([sys.executable, "-c", LAUNCHER], dict(os.environ),
                                            str(tmp_path / "launcher.log"))
    assert figures["processes"] == 1
    assert figures["largest_worker_peak_mb"] > 55 > figures["launcher_peak_mb"]
    assert figures["wall_s"] >= 1.0 and figures["cpu_s"] > 0
    assert figures["runner_peak_mb"] is None  # no Beam pipeline ran: the launcher is all there is


def test_a_failed_stage_is_one_error_with_the_end_of_its_log(tmp_path):
    with pytest.raises(SystemExit, match="exited 3(.|\\n)*the stage's last words"):
        failing = "import sys; print(\"the stage's last words\"); sys.exit(3)"
        scale_catalog.measure_command([sys.executable, "-c", failing], dict(os.environ), str(tmp_path / "failed.log"))


def test_growth_is_per_stage_against_its_smallest_catalog():
    def row(stage, n, wall_s, own, worker):
        return {"stage": stage, "n": n, "wall_s": wall_s, "cpu_s": 1.0, "launcher_own_peak_mb": own,
                "runner_peak_mb": None, "largest_worker_peak_mb": worker, "tree_pss_peak_mb": own + worker}

    rows = [row("embed", 10, 10.0, 100.0, 200.0), row("embed", 40, 20.0, 110.0, 300.0),
            row("catalog", 40, 4.0, 50.0, 0.0)]
    grown = scale_catalog.with_growth(rows)
    assert (grown[1]["wall_per_title_x"], grown[1]["launcher_own_peak_x"], grown[1]["largest_worker_peak_x"],
            grown[1]["tree_pss_peak_x"]) == (0.5, 1.1, 1.5, 1.37)
    assert grown[2]["largest_worker_peak_x"] is None
    lines = scale_catalog.report_lines(grown)
    assert len(lines) == 5 and lines[2].startswith("| catalog | 40 |") and "| – |" in lines[2]


def test_one_percent_of_the_distinct_posters_are_rewritten_and_the_broken_ones_skipped(tmp_path):
    from pipelines.synthetic.catalog import generate_catalog

    generate_catalog(str(tmp_path), n=120, seed=0, width=64, height=96)
    before = {path: path.read_bytes() for path in (tmp_path / "posters").iterdir()}
    changed = scale_catalog.change_posters(str(tmp_path), 0.01)
    assert len(changed) == 1  # 1 % of 120 rounds to one
    rewritten = [path for path, data in before.items() if path.read_bytes() != data]
    assert [str(path) for path in rewritten] == changed
    assert len(scale_catalog.change_posters(str(tmp_path), 0.05)) == 6


def test_the_incremental_runs_report_their_share_of_the_first_run_s_bytes():
    rows = [{"stage": "embed", "n": 100, "poster_bytes_read": 4000},
            {"stage": "embed_unchanged", "n": 100, "poster_bytes_read": 0, "share_of_first_run_bytes": 0.0},
            {"stage": "embed_changed", "n": 100, "poster_bytes_read": 40, "share_of_first_run_bytes": 0.01}]
    assert scale_catalog.bytes_lines(rows) == [
        "poster bytes read, N=100: embed 4,000; embed_unchanged 0 (0.00% of the first run's); "
        "embed_changed 40 (1.00% of the first run's)"]
