"""Embeddings Parquet: the contract schema and metadata, bounded sorted shards, a manifest, staged publishing."""
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common import storage
from pipelines.contracts import EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE, embed_output_schema
from pipelines.embed.writer import (
    WriteEmbeddings,
    embeddings_table,
    num_shards_for,
    parquet_files,
    publish_embeddings,
    shard_of,
    write_manifest,
)

DIM = 4


def make_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return [{"title_id": f"tt{i:04d}", "embedding": vectors[i], "image_sha256": f"sha{i}", "model_version": "v1",
             "genres": ("Drama", "Horror")[: 1 + i % 2]} for i in range(n)]


def write_with_beam(rows, out_dir, max_rows_per_file):
    with BeamTestPipeline() as p:
        written = (p | beam.Create(rows) | WriteEmbeddings(str(out_dir), DIM, "v1", max_rows_per_file))
        assert_that(written | beam.MapTuple(lambda name, n: n) | beam.CombineGlobally(sum), equal_to([len(rows)]))


def test_table_has_contract_schema_and_metadata_sorted_by_title():
    rows = make_rows(5)[::-1]
    table = embeddings_table(rows, DIM, "v1")
    assert table.schema.equals(embed_output_schema(DIM, "v1"), check_metadata=True)
    assert table.schema.metadata == {b"dim": b"4", b"metric": b"angular", b"model_version": b"v1"}
    assert table.column("title_id").to_pylist() == sorted(r["title_id"] for r in rows)


@pytest.mark.parametrize("lengths", [(DIM, DIM + 1), (DIM + 1, DIM + 1), (DIM - 1,)])
def test_vector_of_wrong_length_is_refused(lengths):
    """One vector off, every vector off (a model of another dim), a lone short vector: none becomes a row,
    and the error names the title."""
    rows = make_rows(len(lengths))
    for row, length in zip(rows, lengths):
        row["embedding"] = np.zeros(length, np.float32)
    with pytest.raises(ValueError, match=r"title tt\d+: embedding has \d+ values, the model's dim is 4"):
        embeddings_table(rows, DIM, "v1")


def test_shard_of_is_fixed_by_sha256_not_by_python_hash():
    """Values from sha256's first 8 bytes mod 7, recorded once: they must not vary with PYTHONHASHSEED or machine."""
    assert [shard_of(t, 7) for t in ("tt0001", "tt0002", "tt0003", "a", "é")] == [3, 6, 1, 4, 3]
    assert [num_shards_for(n, 10) for n in (0, 10, 11, 95)] == [1, 1, 2, 10]


def test_beam_write_gives_bounded_sorted_files_with_every_row_once(tmp_path):
    rows = make_rows(37)
    write_with_beam(rows, tmp_path, max_rows_per_file=10)
    files = parquet_files(str(tmp_path))
    assert len(files) >= 4 and all(n <= 10 for _, n in files)
    tables = [pq.read_table(tmp_path / name) for name, _ in files]
    for table in tables:
        ids = table.column("title_id").to_pylist()
        assert ids == sorted(ids)
        assert table.schema.equals(embed_output_schema(DIM, "v1"), check_metadata=True)
    got = {tid: vec for t in tables for tid, vec in zip(t.column("title_id").to_pylist(),
                                                        t.column("embedding").to_numpy(zero_copy_only=False))}
    assert sorted(got) == [r["title_id"] for r in rows]
    np.testing.assert_array_equal(np.stack([got[r["title_id"]] for r in rows]),
                                  np.stack([r["embedding"] for r in rows]))


def test_beam_write_is_deterministic(tmp_path):
    rows = make_rows(23)
    write_with_beam(rows, tmp_path / "a", max_rows_per_file=8)
    write_with_beam(rows[::-1], tmp_path / "b", max_rows_per_file=8)
    first, second = parquet_files(str(tmp_path / "a")), parquet_files(str(tmp_path / "b"))
    assert first == second
    for name, _ in first:
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "b" / name))


def test_manifest_lists_files_rows_and_counts(tmp_path):
    write_with_beam(make_rows(12), tmp_path, max_rows_per_file=5)
    manifest = write_manifest(str(tmp_path), parquet_files(str(tmp_path)), DIM, "v1", {"new": 12})
    on_disk = json.loads((tmp_path / EMBEDDINGS_MANIFEST_FILE).read_text())
    assert on_disk == manifest
    assert manifest["rows"] == 12 and manifest["dim"] == DIM and manifest["metric"] == "angular"
    assert manifest["files"] == sorted(name for name in os.listdir(tmp_path) if name.endswith(".parquet"))
    assert sum(pq.read_metadata(tmp_path / name).num_rows for name in manifest["files"]) == 12


def test_manifest_of_no_rows_points_at_one_empty_file_with_the_schema(tmp_path):
    manifest = write_manifest(str(tmp_path), [], DIM, "v1", {})
    assert manifest["rows"] == 0 and len(manifest["files"]) == 1
    table = pq.read_table(tmp_path / manifest["files"][0])
    assert table.num_rows == 0 and table.schema.equals(embed_output_schema(DIM, "v1"), check_metadata=True)


def test_publish_replaces_previous_output_and_writes_success_last(tmp_path, monkeypatch):
    final = tmp_path / "embeddings"
    final.mkdir()
    (final / "part-99999-000.parquet").write_bytes(b"stale")
    staging = storage.staging_uri(str(final))
    write_with_beam(make_rows(6), staging, max_rows_per_file=100)
    manifest = write_manifest(staging, parquet_files(staging), DIM, "v1", {"new": 6})
    writes = []  # (file written, what `final` held at that moment)
    real_write_bytes = storage.write_bytes

    def recording_write_bytes(uri, data):
        writes.append((os.path.basename(uri), sorted(os.listdir(final)) if os.path.isdir(final) else None))
        return real_write_bytes(uri, data)

    monkeypatch.setattr(storage, "write_bytes", recording_write_bytes)
    publish_embeddings(staging, str(final), manifest)
    monkeypatch.undo()
    # `_SUCCESS` is written once, last, when `final` already holds exactly the new parts and manifest.
    assert [name for name, _ in writes].count(SUCCESS_FILE) == 1
    assert writes[-1] == (SUCCESS_FILE, sorted(manifest["files"] + [EMBEDDINGS_MANIFEST_FILE]))
    assert not os.path.exists(staging)
    assert sorted(os.listdir(final)) == sorted(manifest["files"] + [EMBEDDINGS_MANIFEST_FILE, SUCCESS_FILE])
    assert json.loads((final / SUCCESS_FILE).read_text())["rows"] == 6
