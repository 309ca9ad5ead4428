"""`posters bench nightly` at a tiny size: every stage of the generated-vectors night is timed beside its reference
in one run, and the table and JSON say so. (The posters night needs a model export and TensorFlow: not run here.)"""
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
        assert abs(row["ratio"] - row["seconds"] / row["reference_s"]) <= 0.1 * row["ratio"]  # both rounded
    table = capsys.readouterr().out
    assert "| vectors: item→item, list groups | 2,000 |" in table and "| × reference |" in table


def test_the_table_leaves_a_missing_reference_blank():
    row = {"stage": "s", "titles": 10, "seconds": 2.0, "reference": "r", "reference_s": None, "ratio": None}
    assert nightly.table([row]).splitlines()[-1] == "| s | 10 | 2.0 | r | – | – |"
