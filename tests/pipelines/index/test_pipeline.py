"""`posters index`: the Beam build, its manifest, the recall gate and publishing, on real faiss and DirectRunner."""
import os

import apache_beam as beam
import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common import storage, versions
from pipelines.config import ConfigError, load_config
from pipelines.contracts import INDEX_ID_MAP_FILE, INDEX_MANIFEST_FILE, index_shard_name
from pipelines.index import faiss_index as vi
from pipelines.index import pipeline as index
from tests.pipelines.embeddings_fixture import MODEL_VERSION, title_ids, unit_vectors, write_embeddings

IVF_SHARDED = ["index.flat_max_vectors=100", "index.nlist=32", "index.num_shards=3", "index.recall_queries=100"]


def build(embeddings: str, out: str, *overrides: str) -> dict:
    return index.build_and_publish(load_config(None, list(overrides)), embeddings, out,
                                   test_pipeline=test_pipeline.TestPipeline())


def shard_ids(path: str) -> list[int]:
    """Every id stored in a shard file (IVF: all inverted lists; IDMap: the id map)."""
    shard = faiss.read_index(path)
    if isinstance(shard, faiss.IndexIDMap2):
        return faiss.vector_to_array(shard.id_map).tolist()
    lists = shard.invlists
    return [i for list_no in range(shard.nlist)
            for i in faiss.rev_swig_ptr(lists.get_ids(list_no), lists.list_size(list_no)).tolist()]


def version_dirs(out: str) -> list[str]:
    return sorted(name for name in os.listdir(out) if not name.startswith("CURRENT")) if os.path.exists(out) else []


@pytest.fixture
def embeddings(tmp_path):
    return write_embeddings(str(tmp_path / "embeddings"), title_ids(1500), unit_vectors(1500), files=3)


def test_every_vector_is_in_exactly_one_shard(embeddings, tmp_path):
    manifest = build(embeddings, str(tmp_path / "index"), *IVF_SHARDED)
    version = versions.current_version_uri(str(tmp_path / "index"))
    per_shard = [shard_ids(os.path.join(version, index_shard_name(s))) for s in range(3)]
    everything = [i for ids in per_shard for i in ids]
    assert sorted(everything) == sorted(vi.stable_ids(title_ids(1500)).tolist())
    assert [len(ids) for ids in per_shard] == [s["count"] for s in manifest["shards"]]
    assert all(vi.shard_of(np.array(ids), 3).tolist() == [s] * len(ids) for s, ids in enumerate(per_shard))


def test_the_manifest_describes_and_checksums_what_was_built(embeddings, tmp_path):
    manifest = build(embeddings, str(tmp_path / "index"), *IVF_SHARDED)
    version = versions.current_version_uri(str(tmp_path / "index"))
    assert storage.read_json(os.path.join(version, INDEX_MANIFEST_FILE))["version"] == manifest["version"]
    assert (manifest["factory"], manifest["metric"], manifest["dim"], manifest["nlist"]) == (
        "IVF32,Flat", "inner_product", 16, 32)
    assert (manifest["model_version"], manifest["count"], manifest["recall_queries"]) == (MODEL_VERSION, 1500, 100)
    for shard in manifest["shards"]:
        data = open(os.path.join(version, shard["file"]), "rb").read()
        assert (vi.sha256_hex(data), len(data)) == (shard["sha256"], shard["bytes"])
    assert manifest["recall_at_10"] >= 0.95 and manifest["build_s"] > 0


def test_nprobe_is_tuned_to_the_smallest_value_that_passes_the_gate(embeddings, tmp_path):
    manifest = build(embeddings, str(tmp_path / "index"), *IVF_SHARDED, "index.nprobe=1")
    measured = [(r["nprobe"], r["recall_at_10"]) for r in manifest["recall_by_nprobe"]]
    passing = [nprobe for nprobe, recall in measured if recall >= 0.95]
    assert manifest["nprobe"] == passing[0] > 1
    assert all(recall < 0.95 for nprobe, recall in measured if nprobe < manifest["nprobe"])


def test_the_id_map_holds_every_title_with_its_stable_id_and_shard(embeddings, tmp_path):
    build(embeddings, str(tmp_path / "index"), *IVF_SHARDED)
    id_map = pq.read_table(os.path.join(versions.current_version_uri(str(tmp_path / "index")), INDEX_ID_MAP_FILE))
    ids = dict(zip(id_map.column("title_id").to_pylist(), id_map.column("id").to_pylist()))
    assert ids == dict(zip(title_ids(1500), vi.stable_ids(title_ids(1500)).tolist()))
    assert id_map.column("shard").to_pylist() == vi.shard_of(id_map.column("id").to_numpy(), 3).tolist()


def test_ids_are_stable_across_builds_and_when_titles_are_added(tmp_path):
    vectors = unit_vectors(400)
    small = write_embeddings(str(tmp_path / "small"), title_ids(300), vectors[:300])
    grown = write_embeddings(str(tmp_path / "grown"), title_ids(400)[::-1], vectors[::-1], files=4)
    maps = []
    for name, embeddings in (("a", small), ("b", small), ("c", grown)):
        build(embeddings, str(tmp_path / name))
        table = pq.read_table(os.path.join(versions.current_version_uri(str(tmp_path / name)), INDEX_ID_MAP_FILE))
        maps.append(dict(zip(table.column("title_id").to_pylist(), table.column("id").to_pylist())))
    assert maps[0] == maps[1]
    assert maps[0].items() <= maps[2].items() and len(maps[2]) == 400


def test_the_recall_gate_fails_a_bad_configuration_and_publishes_nothing(embeddings, tmp_path):
    out = str(tmp_path / "index")
    good = build(embeddings, out)
    bad = [*IVF_SHARDED, "index.nprobe=1", "index.tune_nprobe=false"]
    with pytest.raises(index.RecallTooLow, match=r"recall@10 0\.\d+ is below index.min_recall_at_10 0.95"):
        build(embeddings, out, *bad)
    assert versions.read_current(out).version == good["version"]
    assert version_dirs(out) == [good["version"]]


def test_vectors_that_are_not_unit_norm_fail_the_build_and_leave_nothing(tmp_path):
    vectors = unit_vectors(200)
    vectors[17] *= 3
    embeddings = write_embeddings(str(tmp_path / "embeddings"), title_ids(200), vectors)
    with pytest.raises(vi.IndexBuildError, match="not unit-norm, e.g. 'tt0000017'"):
        build(embeddings, str(tmp_path / "index"))
    assert versions.read_current(str(tmp_path / "index")) is None
    assert version_dirs(str(tmp_path / "index")) == []


def test_a_title_listed_twice_fails_the_build(tmp_path):
    ids = title_ids(100) + ["tt0000042"]
    embeddings = write_embeddings(str(tmp_path / "embeddings"), ids, unit_vectors(101))
    with pytest.raises(vi.IndexBuildError, match="'tt0000042' appears more than once"):
        build(embeddings, str(tmp_path / "index"))
    assert versions.read_current(str(tmp_path / "index")) is None


def test_embeddings_of_another_metric_are_refused(tmp_path):
    embeddings = write_embeddings(str(tmp_path / "embeddings"), title_ids(10), unit_vectors(10), metric="L2")
    with pytest.raises(vi.IndexBuildError, match="metric 'L2'"):
        build(embeddings, str(tmp_path / "index"))


def test_impossible_settings_name_the_key(embeddings, tmp_path):
    with pytest.raises(ConfigError, match="index.keep_versions must be positive"):
        build(embeddings, str(tmp_path / "index"), "index.keep_versions=0")


def test_a_retried_shard_writes_the_same_file(tmp_path):
    """The DirectRunner does not retry bundles; a runner that does reruns build_shard on the same input."""
    vectors = unit_vectors(300)
    batch = index.VectorBatch(vi.stable_ids(title_ids(300)), title_ids(300), vectors)
    empty = vi.serialize(vi.train_empty_index("IVF8,Flat", 16, vectors))
    first = index.build_shard(0, batch, empty, index.take_rows(batch, np.arange(5)), [2], str(tmp_path))
    data = open(tmp_path / index_shard_name(0), "rb").read()
    again = index.build_shard(0, batch, empty, index.take_rows(batch, np.arange(5)), [2], str(tmp_path))
    assert first.sha256 == again.sha256 == vi.sha256_hex(open(tmp_path / index_shard_name(0), "rb").read())
    assert vi.sha256_hex(data) == first.sha256


def test_the_sample_is_the_rows_with_the_smallest_ids():
    ids = title_ids(50)
    vectors = unit_vectors(50)
    batches = [index.VectorBatch(vi.stable_ids(ids[i:i + 10]), ids[i:i + 10], vectors[i:i + 10])
               for i in range(0, 50, 10)]
    expected = sorted(vi.stable_ids(ids).tolist())[:7]
    with test_pipeline.TestPipeline() as p:
        sample = (p | beam.Create(batches) | beam.CombineGlobally(index.SmallestIds(7, 16))
                  | beam.Map(lambda batch: batch.ids.tolist()))
        assert_that(sample, equal_to([expected]))


def test_main_publishes_and_rollback_goes_back_one_version(embeddings, tmp_path, capsys):
    out = str(tmp_path / "index")
    args = ["--config", "configs/local.yaml", "--embeddings", embeddings, "--out", out]
    assert index.main(args) == 0
    first = versions.read_current(out).version
    assert index.main(args) == 0
    assert "1,500 vectors in 1 shards (IDMap2,Flat), recall@10 1.000" in capsys.readouterr().out
    assert index.main(["rollback", "--out", out]) == 0
    assert versions.read_current(out).version == first


def test_main_reports_a_build_the_user_must_fix_without_a_traceback(embeddings, tmp_path, capsys):
    out = str(tmp_path / "index")
    assert index.main(["rollback", "--out", out]) == 1
    assert "nothing is published" in capsys.readouterr().err
    args = ["--embeddings", embeddings, "--out", out, *sum((["--set", o] for o in IVF_SHARDED), []),
            "--set", "index.nprobe=1", "--set", "index.tune_nprobe=false"]
    assert index.main(args) == 1
    assert "posters index: recall@10" in capsys.readouterr().err


def test_an_out_that_is_or_holds_the_embeddings_is_refused_before_any_work(embeddings, tmp_path, capsys):
    before = sorted(os.listdir(embeddings))
    for out in (embeddings, str(tmp_path)):
        assert index.main(["--config", "configs/local.yaml", "--embeddings", embeddings, "--out", out]) == 1
        assert f"posters index: --out {out} " in capsys.readouterr().err
    assert sorted(os.listdir(embeddings)) == before and sorted(os.listdir(tmp_path)) == ["embeddings"]


def test_an_empty_current_stops_the_build_before_it_starts_naming_the_file(embeddings, tmp_path, capsys):
    out = tmp_path / "index"
    out.mkdir()
    (out / versions.POINTER_FILE).write_bytes(b"")
    assert index.main(["--config", "configs/local.yaml", "--embeddings", embeddings, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"posters index: {out / versions.POINTER_FILE} is empty: ") and "\n" not in err
    assert os.listdir(out) == [versions.POINTER_FILE]  # nothing was built
