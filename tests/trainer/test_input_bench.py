"""`posters bench train-input` on a tiny preprocess output: not a timed test, it runs every measure and reports it.

The peak-RSS children (a TensorFlow process each) are left out of the command here and their body is run in this
process instead, to keep the test short.
"""
import json

from tests.trainer.fixtures import write_preprocess_output, write_tiny_config
from trainer import input_bench


def test_the_benchmark_reports_the_streamed_and_the_in_memory_input(tmp_path, capsys):
    data = write_preprocess_output(str(tmp_path / "data"), shards=2)
    config = write_tiny_config(str(tmp_path / "tiny.yaml"))
    out = tmp_path / "bench.json"
    argv = ["--config", config, "--data", data, "--batch", "8", "--batches", "2", "--repeats", "1", "--scales", "",
            "--json", str(out)]
    assert input_bench.main(argv) == 0
    results = json.loads(out.read_text())
    assert min(results[f"{name}_images_per_s"] for name in ("in_memory", "streaming", "pk_streaming")) > 0
    assert results["streaming_over_in_memory"] > 0
    assert "streaming / in memory = " in capsys.readouterr().out


def test_a_rss_child_passes_over_the_scaled_split_and_reports_its_peak(tmp_path, capsys):
    data = write_preprocess_output(str(tmp_path / "data"), shards=2)
    scaled = input_bench.scaled_copy(data, 3, str(tmp_path / "x3"))
    assert input_bench._train_posters(scaled) == 3 * 48
    config = write_tiny_config(str(tmp_path / "tiny.yaml"))
    assert input_bench.main(["--child", "streaming", scaled, config, "8", "19"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["posters"] == 19 * 8 and printed["peak_rss_mb"] > 100
