"""`posters bench scale-catalog`: the process-tree sampler and the growth figures (the stages are the real CLIs)."""
import os
import sys

from pipelines.bench import scale_catalog

# A launcher that starts, from a thread (as Beam does), a worker holding ~60 MB, and waits for it.
LAUNCHER = """
import subprocess, sys, threading
worker = "import time; block = bytearray(60 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.0)"
thread = threading.Thread(target=lambda: subprocess.run([sys.executable, "-c", worker], check=True))
thread.start(); thread.join()
"""


def test_the_largest_worker_started_from_a_thread_is_sampled_apart_from_the_launcher():
    figures = scale_catalog.measure_command([sys.executable, "-c", LAUNCHER], dict(os.environ))
    assert figures["processes"] == 1
    assert figures["worker_peak_mib"] > 55 > figures["launcher_peak_mib"]
    assert figures["wall_s"] >= 1.0 and figures["cpu_s"] > 0


def test_growth_is_per_stage_against_its_smallest_catalog():
    def row(stage, n, wall_s, launcher, worker):
        return {"stage": stage, "n": n, "wall_s": wall_s, "cpu_s": 1.0, "launcher_peak_mib": launcher,
                "worker_peak_mib": worker}

    rows = [row("embed", 10, 10.0, 100.0, 200.0), row("embed", 40, 20.0, 100.0, 300.0),
            row("catalog", 40, 4.0, 50.0, 0.0)]
    grown = scale_catalog.with_growth(rows)
    assert (grown[1]["wall_per_title_x"], grown[1]["worker_peak_x"]) == (0.5, 1.5)
    assert grown[2]["worker_peak_x"] is None
    assert len(scale_catalog.report_lines(grown)) == 5
