"""Gates: minimums from config.evaluate and the largest drop from the previous night; a failing gate is named."""
from pipelines.config import EvaluateConfig
from pipelines.evaluate.gates import check_gates, gate_files


def _evaluation(precision=0.8, near_recall=0.95, content=0.3, popular=0.2):
    return {"k": 10,
            "retrieval": {"embedding": {"precision_at_10": precision, "map_at_r": 0.5}},
            "near_duplicates": {"embedding": {"recall_at_1": near_recall, "recall_at_10": 1.0}},
            "candidates": {"methods": {"content": {"hit_rate_at_10": content},
                                       "most_watched": {"hit_rate_at_10": popular}}}}


def test_a_good_night_passes_every_gate():
    assert check_gates(_evaluation(), EvaluateConfig(), previous=_evaluation()) == []


def test_low_near_duplicate_recall_fails():
    failures = check_gates(_evaluation(near_recall=0.5), EvaluateConfig())
    assert len(failures) == 1
    assert "near-duplicate recall@1 0.500 < evaluate.min_near_duplicate_recall_at_1 0.9" in failures[0]


def test_candidates_below_popularity_fail():
    failures = check_gates(_evaluation(content=0.1, popular=0.2), EvaluateConfig())
    assert len(failures) == 1 and "most-watched baseline's 0.200" in failures[0]
    assert check_gates(_evaluation(content=0.1, popular=0.2), EvaluateConfig(min_hit_rate_vs_popularity=0.5)) == []


def test_a_drop_from_the_previous_night_fails():
    failures = check_gates(_evaluation(precision=0.6), EvaluateConfig(), previous=_evaluation(precision=0.8))
    assert len(failures) == 1 and "retrieval precision@10 dropped 25.0 %" in failures[0]
    assert check_gates(_evaluation(precision=0.75), EvaluateConfig(), previous=_evaluation(precision=0.8)) == []


def test_a_measure_that_was_not_taken_fails_unless_its_gate_is_off():
    bare = {"k": 10, "retrieval": {"embedding": {"precision_at_10": 0.8}}}
    assert len(check_gates(bare, EvaluateConfig())) == 2
    off = EvaluateConfig(min_near_duplicate_recall_at_1=None, min_hit_rate_vs_popularity=None)
    assert check_gates(bare, off) == []


def test_gate_files_reads_evaluation_json_and_skips_a_missing_previous(tmp_path):
    import json

    (tmp_path / "today.json").write_text(json.dumps(_evaluation(near_recall=0.1)))
    failures = gate_files(str(tmp_path / "today.json"), EvaluateConfig(), str(tmp_path / "absent.json"))
    assert len(failures) == 1


def test_enforce_gates_raises_on_recorded_failures():
    import pytest

    from pipelines.evaluate.gates import GateFailed, enforce_gates

    enforce_gates({"gates": {"failures": []}})
    with pytest.raises(GateFailed, match="1 evaluation gate"):
        enforce_gates({"gates": {"failures": ["near-duplicate recall@1 0.5 < 0.9"]}})
