"""`make demo`'s command on a small catalog: every stage runs and the summary names real outputs."""
import json

from PIL import Image

from pipelines import demo


def test_demo_runs_every_stage_and_summarises(tmp_path, capsys):
    out = tmp_path / "demo"
    code = demo.main(["--config", "configs/local.yaml", "--out", str(out), "--n", "80", "--seed", "3",
                      "--set", "model.input_size=32", "--set", "train.warmup_epochs=1",
                      "--set", "train.metric_epochs=1", "--set", "train.classes_per_batch=4",
                      "--set", "train.unfreeze_schedule=[[block_3]]", "--set", "evaluate.map_projection=pca",
                      "--set", "evaluate.near_duplicate_posters=10", "--set", "evaluate.map_posters=3",
                      "--set", "evaluate.report_titles=3",
                      # one epoch per phase on 80 posters shows the stages run, not that phase 2 beats phase 1
                      "--set", "train.regression_margin=null"])
    assert code == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    catalog = summary["catalog"]
    assert catalog["read"] == 80 and catalog["accepted"] + catalog["rejected"] == 80
    assert set(summary["precision_at_10"]) == {"baseline", "phase1", "phase2"}
    assert all(0.0 <= value <= 1.0 for value in summary["precision_at_10"].values())
    for name in ("catalog_preview", "training_curves", "similar", "mix"):
        with Image.open(summary["outputs"][name]) as picture:
            assert picture.width > 100 and picture.height > 100
    for name in ("item2item", "user"):
        assert list((out / "candidates").glob(f"{name}*")), f"no {name} candidates written"
    evaluation = json.loads((out / "evaluation" / "evaluation.json").read_text())
    assert {"embedding", "random", "colour_histogram", "colour_thumbnail", "train phase2"} <= set(
        evaluation["retrieval"])
    assert set(summary["evaluation"]["hit_rate_at_k"]) == {"content", "most_watched", "random"}
    printed = capsys.readouterr().out
    assert "poster similarity demo: done" in printed and str(out / "similar.png") in printed
    assert printed.rstrip().splitlines()[-1] == f"report: {out / 'evaluation' / 'report.html'}"
