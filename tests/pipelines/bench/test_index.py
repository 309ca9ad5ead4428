"""`posters bench index` on a small catalog: not a timed test, it runs every configuration asked for and writes
every figure it promises, with recall that means something (exact search and an IVF probing every list find
the true neighbours)."""
import json

import pytest

from pipelines.bench import index as index_bench

N = 2000
QUERIES = 100
COLUMNS = {"index", "n", "nprobe", "qps", "recall_at_10", "build_s"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "index.json"
    argv = ["--n", str(N), "--factory", "IVF16,Flat", "--nprobe", "1,4,16,32", "--queries", str(QUERIES),
            "--repeat", "1", "--json", str(out)]
    assert index_bench.main(argv) == 0
    return json.loads(out.read_text())


def test_every_row_has_its_figures_with_sane_values(rows):
    for row in rows:
        assert COLUMNS <= set(row), row
        assert row["n"] == N
        assert isinstance(row["qps"], (int, float)) and row["qps"] > 0
        assert isinstance(row["build_s"], (int, float)) and row["build_s"] >= 0
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert row["nprobe"] is None or isinstance(row["nprobe"], int)


def test_the_rows_are_exact_search_the_default_choice_and_the_asked_factory_at_each_possible_nprobe(rows):
    # 2000 vectors are under `index.flat_max_vectors`, so the default choice is exact search too; nprobe 32 is
    # more than IVF16 has lists, so it is left out.
    assert [(row["index"], row["nprobe"]) for row in rows] == [
        ("Flat (exact)", None), ("IDMap2,Flat ×1 shards", None),
        ("IVF16,Flat ×1 shards", 1), ("IVF16,Flat ×1 shards", 4), ("IVF16,Flat ×1 shards", 16)]


def test_exact_search_and_an_ivf_probing_every_list_have_full_recall(rows):
    by_config = {(row["index"], row["nprobe"]): row["recall_at_10"] for row in rows}
    assert by_config[("Flat (exact)", None)] == 1.0
    assert by_config[("IDMap2,Flat ×1 shards", None)] == 1.0  # the pipeline's exact index: the same neighbours
    assert by_config[("IVF16,Flat ×1 shards", 16)] == 1.0  # all 16 lists probed: exhaustive
    assert by_config[("IVF16,Flat ×1 shards", 1)] < 1.0  # one list of 16 misses neighbours in the others
    assert by_config[("IVF16,Flat ×1 shards", 1)] <= by_config[("IVF16,Flat ×1 shards", 4)]
