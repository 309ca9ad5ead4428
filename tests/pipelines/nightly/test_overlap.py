"""The overlap report in bounded memory: both nights split by title hash, one partition compared at a time,
with the same answer as comparing everything at once."""
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.contracts import ITEM2ITEM_SCHEMA
from pipelines.nightly import overlap

K = 3


def _write_hashes(path, hashes: dict) -> str:
    pq.write_table(pa.table({"title_id": list(hashes), "image_sha256": list(hashes.values())}), path)
    return str(path)


def _write_lists(path, lists: dict) -> str:
    rows = [{"title_id": t, "neighbors": [{"title_id": n, "score": 1.0} for n in ns], "index_version": "v",
             "model_version": "m"} for t, ns in lists.items()]
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM2ITEM_SCHEMA), path)
    return str(path)


def whole_overlap(today_hashes, before_hashes, today_lists, before_lists, k):
    """The old construction: every night's hashes and lists in dicts, at once."""
    unchanged = [t for t, sha in today_hashes.items() if before_hashes.get(t) == sha]
    shares = [len(set(today_lists[t][:k]) & set(before_lists[t][:k]))
              / max(1, len(today_lists[t][:k]), len(before_lists[t][:k]))
              for t in unchanged if t in today_lists and t in before_lists]
    return (sum(shares) / len(shares) if shares else None), len(unchanged)


def test_one_partition_compares_shared_neighbours_of_unchanged_posters():
    hashes = pa.table({"title_id": ["a", "b", "new"], "image_sha256": ["1", "2", "3"]})
    before = pa.table({"title_id": ["a", "b"], "image_sha256": ["1", "2"]})
    today = pa.table({"title_id": ["a", "b", "new"], "neighbours": [["b", "c", "d"], ["a", "c", "d"], ["a"]]})
    yesterday = pa.table({"title_id": ["a", "b"], "neighbours": [["c", "b", "x"], ["x", "y", "z"]]})
    total, compared, unchanged = overlap.partition_overlap(hashes, before, today, yesterday, 3)
    assert (total / compared, compared, unchanged) == (pytest.approx((2 / 3 + 0) / 2), 2, 2)
    assert overlap.partition_overlap(hashes, before, today, yesterday, 1)[0] == 0.0


def test_the_report_holds_one_partition_at_a_time_and_equals_the_whole_comparison(tmp_path):
    """400 titles, partitions of about 50: no partition holds more than a small multiple of 50 titles of one
    input (the old report held all 400 of each in dicts), and the overlap is the same."""
    rng = random.Random(4)
    titles = [f"tt{i:05d}" for i in range(400)]
    before_hashes = {t: f"sha-{t}" for t in titles}
    today_hashes = {t: (f"new-{t}" if rng.random() < 0.1 else f"sha-{t}") for t in titles + ["tt-new"]}
    before_lists = {t: rng.sample(titles, 5) for t in titles}
    today_lists = {t: (before_lists.get(t, [])[:2] + rng.sample(titles, 3)) for t in today_hashes}
    files = [_write_hashes(tmp_path / "today.parquet", today_hashes),
             _write_hashes(tmp_path / "before.parquet", before_hashes),
             _write_lists(tmp_path / "today_i2i.parquet", today_lists),
             _write_lists(tmp_path / "before_i2i.parquet", before_lists)]
    report = overlap.overlap_report([files[0]], [files[1]], [files[2]], [files[3]], K, rows=401,
                                    rows_per_partition=50, work_dir=str(tmp_path))
    expected, unchanged = whole_overlap(today_hashes, before_hashes, today_lists, before_lists, K)
    assert report["overlap_at_k"] == pytest.approx(expected) and report["titles_compared"] == unchanged
    assert report["partitions"] == 9 and report["largest_partition_rows"] <= 100
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(os.path.basename(f) for f in files)  # spill removed


def test_no_comparable_title_gives_no_overlap(tmp_path):
    files = [_write_hashes(tmp_path / "a.parquet", {"x": "1"}), _write_hashes(tmp_path / "b.parquet", {"x": "2"}),
             _write_lists(tmp_path / "c.parquet", {"x": ["y"]}), _write_lists(tmp_path / "d.parquet", {"x": ["y"]})]
    report = overlap.overlap_report([files[0]], [files[1]], [files[2]], [files[3]], K, rows=1, rows_per_partition=10)
    assert (report["overlap_at_k"], report["titles_compared"]) == (None, 0)
