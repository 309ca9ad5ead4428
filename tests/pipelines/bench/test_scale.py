"""`posters bench scale`'s measuring: a process tree's launcher and largest worker are told apart, and the
table reports growth from the smallest N to the largest. (The stages themselves are not run here: too slow.)"""
import sys

from pipelines.bench import scale

HOLD = "import time; block = bytearray({mb} << 20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1)"


def test_the_launcher_and_its_largest_worker_are_measured_apart(tmp_path):
    worker = [sys.executable, "-c", HOLD.format(mb=120)]
    launcher = [sys.executable, "-c", f"import subprocess; {HOLD.format(mb=30)!s}; subprocess.run({worker!r})"]
    found = scale.measure(launcher, {}, str(tmp_path / "log"))
    assert found["processes"] == 1 and found["largest_worker_peak_mb"] >= 120 > found["launcher_peak_mb"] >= 30
    assert found["largest_worker_anon_mb"] >= 120 and found["wall_s"] >= 2 and found["cpu_s"] >= 0


def test_the_table_gives_each_measure_s_growth():
    rows = [{"n": n, "index": {"wall_s": w, "cpu_s": w, "launcher_peak_mb": 100, "launcher_anon_mb": 50,
                               "largest_worker_peak_mb": m, "largest_worker_anon_mb": m}}
            for n, w, m in ((100, 1.0, 200), (400, 4.0, 300))]
    lines = scale.table(rows, ["index"]).splitlines()
    assert lines[0] == "| stage | measure | 100 | 400 | growth |"
    assert "| index | wall s | 1.0 | 4.0 | 4.00× |" in lines
    assert "| index | largest worker peak RSS MB | 200.0 | 300.0 | 1.50× |" in lines


def test_the_evaluate_stage_gets_a_catalog_whose_rows_all_name_a_readable_poster(tmp_path):
    from pipelines.common import storage
    from pipelines.common.catalog import read_catalog
    from pipelines.config import CatalogConfig
    from pipelines.evaluate.reference import decode_rgb

    titles = [f"tt{i:09d}" for i in range(5)]
    rows = read_catalog(scale.write_catalog(str(tmp_path), titles), CatalogConfig())
    assert [row.title_id for row in rows] == titles and all(row.problem is None for row in rows)
    assert decode_rgb(storage.read_bytes(rows[0].poster_uri)).size == (32, 48)
    command = scale.stage_commands(str(tmp_path), "configs/local.yaml", [])["evaluate"]
    assert command[command.index("--catalog") + 1] == str(tmp_path / "catalog.csv")
    assert not set(scale.DIRECT_FLAGS) & set(command)  # not a Beam pipeline
