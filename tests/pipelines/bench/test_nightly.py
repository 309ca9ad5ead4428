"""`posters bench nightly` at a tiny size: every stage of the generated-vectors night is timed beside its reference
in one run, and the table and JSON say so. The posters night at 40 titles: its embed row beside the plain loop."""
import json

from pipelines.bench import nightly


def test_a_tiny_night_times_each_stage_beside_its_reference(tmp_path, capsys):
    out = tmp_path / "nightly.json"
    assert nightly.main(["--poster-titles", "0", "--vector-titles", "2000", "--dim", "32", "--factory", "IVF8,Flat",
                         "--nprobe", "2", "--set", "index.min_recall_at_10=0", "--before", "--runner_flags", "",
                         "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["stage"], r["reference"]) for r in rows] == [
        ("vectors: index (IVF8,Flat, nprobe 2)", "bare faiss build"),
        ("vectors: item→item, list groups", "big_batch_search"),
        ("vectors: item→item, query by query (before)", "big_batch_search"),
        ("vectors: candidates (item→item + users)", "big_batch_search")]
    for row in rows:
        assert row["titles"] == 2000 and row["seconds"] > 0 and row["reference_s"] > 0
        # both times are rounded to 0.01 s and the ratio to 0.01: it lies within what that rounding allows
        low = (row["seconds"] - 0.005) / (row["reference_s"] + 0.005) - 0.005
        high = (row["seconds"] + 0.005) / max(row["reference_s"] - 0.005, 1e-9) + 0.005
        assert low <= row["ratio"] <= high
    index_row = rows[0]  # the index stage's CPU seconds (the runner and its workers) beside bare faiss'
    assert index_row["cpu_s"] > 0 and index_row["reference_cpu_s"] > 0
    cpu, reference = index_row["cpu_s"], index_row["reference_cpu_s"]  # rounded to 0.001 s, the ratio to 0.01
    low, high = (cpu - 5e-4) / (reference + 5e-4) - 0.005, (cpu + 5e-4) / max(reference - 5e-4, 1e-9) + 0.005
    assert low <= index_row["cpu_ratio"] <= high
    table = capsys.readouterr().out
    assert "| vectors: item→item, list groups | 2,000 |" in table and "| × reference |" in table


def test_the_table_leaves_a_missing_reference_blank():
    row = {"stage": "s", "titles": 10, "seconds": 2.0, "reference": "r", "reference_s": None, "ratio": None}
    assert nightly.table([row]).splitlines()[-1] == "| s | 10 | 2.0 | r | – | – |"


def test_the_posters_night_embeds_generated_posters_beside_the_plain_loop(tmp_path):
    """The posters part: a generated catalog embedded by the real pipeline, beside the validate + decode + model loop
    on the same export (the loop takes the model directory; a loaded function there failed before any figure)."""
    out = tmp_path / "nightly.json"
    assert nightly.main(["--poster-titles", "40", "--distinct", "8", "--vector-titles", "0", "--no-candidates",
                         "--set", "model.input_size=32", "--set", "index.min_recall_at_10=0", "--runner_flags", "",
                         "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["stage"], r["reference"]) for r in rows][0] == ("posters: embed", "validate + decode + model loop")
    assert rows[0]["titles"] == 40 and rows[0]["seconds"] > 0 and rows[0]["reference_s"] > 0
