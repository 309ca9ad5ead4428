"""`posters index`: the Beam build, its manifest, the recall gate and publishing, on real faiss and DirectRunner."""
import os
import shutil

import apache_beam as beam
import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.common import storage, versions
from pipelines.config import ConfigError, load_config
from pipelines.contracts import INDEX_ID_MAP_FILE, INDEX_MANIFEST_FILE, index_id_map_name, index_shard_name
from pipelines.index import faiss_index as vi
from pipelines.index import pipeline as index
from pipelines.index.loader import load_index
from tests.pipelines.embeddings_fixture import MODEL_VERSION, title_ids, unit_vectors, write_embeddings

IVF_SHARDED = ["index.flat_max_vectors=100", "index.nlist=32", "index.num_shards=3", "index.recall_queries=100"]
# A sample (400 + 100 queries) a third of the catalog: the id threshold, not the whole catalog, decides it.
SAMPLED = [*IVF_SHARDED, "index.train_sample_size=400"]


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


@pytest.fixture(scope="module")
def shared_embeddings(tmp_path_factory):
    """The 1500 titles of `embeddings`, for the module's shared build."""
    root = tmp_path_factory.mktemp("shared_embeddings")
    return write_embeddings(str(root / "embeddings"), title_ids(1500), unit_vectors(1500), files=3)


@pytest.fixture(scope="module")
def sharded(shared_embeddings, tmp_path_factory):
    """One IVF build in 3 shards of the 1500 titles, trained on a sample of 400 (+ 100 recall queries) and nprobe
    tuned up from 1; the tests below only read it (or a copy)."""
    out = str(tmp_path_factory.mktemp("sharded") / "index")
    manifest = build(shared_embeddings, out, *SAMPLED, "index.nprobe=1")
    return manifest, versions.current_version_uri(out)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """300 titles built once with the default settings (IDMap2,Flat in one shard): → (embeddings, index root,
    manifest). Tests that publish over it work on a copy."""
    root = tmp_path_factory.mktemp("small")
    embeddings = write_embeddings(str(root / "embeddings"), title_ids(300), unit_vectors(300))
    manifest = build(embeddings, str(root / "index"))
    return str(root / "embeddings"), str(root / "index"), manifest


def test_every_vector_is_in_exactly_one_shard(sharded):
    manifest, version = sharded
    per_shard = [shard_ids(os.path.join(version, index_shard_name(s))) for s in range(3)]
    everything = [i for ids in per_shard for i in ids]
    assert sorted(everything) == sorted(vi.stable_ids(title_ids(1500)).tolist())
    assert [len(ids) for ids in per_shard] == [s["count"] for s in manifest["shards"]]
    assert all(vi.shard_of(np.array(ids), 3).tolist() == [s] * len(ids) for s, ids in enumerate(per_shard))


def test_the_manifest_describes_and_checksums_what_was_built(sharded):
    manifest, version = sharded
    assert storage.read_json(os.path.join(version, INDEX_MANIFEST_FILE))["version"] == manifest["version"]
    assert (manifest["factory"], manifest["metric"], manifest["dim"], manifest["nlist"]) == (
        "IVF32,Flat", "inner_product", 16, 32)
    assert (manifest["model_version"], manifest["count"], manifest["recall_queries"]) == (MODEL_VERSION, 1500, 100)
    for shard in manifest["shards"]:
        data = open(os.path.join(version, shard["file"]), "rb").read()
        assert (vi.sha256_hex(data), len(data)) == (shard["sha256"], shard["bytes"])
    assert manifest["recall_at_10"] >= 0.95 and manifest["build_s"] > 0


def test_nprobe_is_tuned_to_the_smallest_value_that_passes_the_gate(sharded):
    manifest, _ = sharded
    measured = [(r["nprobe"], r["recall_at_10"]) for r in manifest["recall_by_nprobe"]]
    passing = [nprobe for nprobe, recall in measured if recall >= 0.95]
    assert measured[0][0] == 1 and manifest["nprobe"] == passing[0] > 1
    assert all(recall < 0.95 for nprobe, recall in measured if nprobe < manifest["nprobe"])


def test_the_id_map_holds_every_title_with_its_stable_id_and_shard(sharded):
    _, version = sharded
    id_map = pa.concat_tables([pq.read_table(os.path.join(version, index_id_map_name(s))) for s in range(3)])
    ids = dict(zip(id_map.column("title_id").to_pylist(), id_map.column("id").to_pylist()))
    assert ids == dict(zip(title_ids(1500), vi.stable_ids(title_ids(1500)).tolist()))
    assert id_map.column("shard").to_pylist() == vi.shard_of(id_map.column("id").to_numpy(), 3).tolist()


def test_each_shard_writes_its_own_id_map_and_the_manifest_lists_them_with_checksums(sharded):
    """The id map used to be assembled from every shard's ids in one process (`ToList`) and written as one file."""
    manifest, version = sharded
    assert [(e["shard"], e["file"]) for e in manifest["id_map"]] == [(s, index_id_map_name(s)) for s in range(3)]
    for entry, shard in zip(manifest["id_map"], manifest["shards"]):
        data = open(os.path.join(version, entry["file"]), "rb").read()
        assert vi.sha256_hex(data) == entry["sha256"] and entry["count"] == shard["count"]
        ids = pq.read_table(os.path.join(version, entry["file"])).column("id").to_numpy()
        assert (np.diff(ids) > 0).all() and (vi.shard_of(ids, 3) == entry["shard"]).all()
    assert not os.path.exists(os.path.join(version, INDEX_ID_MAP_FILE))


def test_the_sample_combiner_sees_only_rows_below_the_id_threshold(tmp_path):
    """The sample used to be merged from every row (all vectors in one process when bundles are small). Now a
    first pass histograms the ids and only rows up to the range where the histogram reaches the sample size
    reach the combiner: at most the sample plus one id range's rows (counted), here far fewer than the catalog."""
    n, size = 3000, 200
    embeddings = write_embeddings(str(tmp_path / "embeddings"), title_ids(n), unit_vectors(n), files=6)
    files = sorted(str(p) for p in (tmp_path / "embeddings").glob("*.parquet"))
    pipeline = test_pipeline.TestPipeline()
    sample = (pipeline | beam.Create(files)
              | index.ReadAllFromParquetBatched(columns=["title_id", "embedding", "model_version"])
              | beam.Map(index.to_vector_batch, 16, MODEL_VERSION)
              | index.SampleSmallestIds(pipeline | "Files" >> beam.Create(files), size, 16)
              | beam.Map(lambda batch: batch.ids.tolist()))
    assert_that(sample, equal_to([sorted(vi.stable_ids(title_ids(n)).tolist())[:size]]))
    result = pipeline.run()
    result.wait_until_finish()
    passed = sum(c.committed for c in result.metrics().query()["counters"] if c.key.metric.name == "sample_candidates")
    widest_range = index.id_histogram(title_ids(n)).max()
    assert embeddings and size <= passed <= size + widest_range < n // 5


def test_the_sample_limit_is_the_range_where_the_histogram_reaches_the_size():
    histogram = np.array([3, 0, 4, 5, 1])
    assert [index.sample_range_limit(histogram, size) for size in (1, 3, 4, 7, 8, 13, 99)] == [0, 0, 2, 2, 3, 4, 4]


def test_the_bounded_build_answers_like_the_single_process_build(sharded, tmp_path):
    """The old construction, done here in one process with the same plain functions: the smallest ids of the
    whole catalog as the sample, every shard built from all its rows. Same recall at every nprobe, same answers
    (the module's shared build, `sharded`, is the bounded one)."""
    manifest, version = sharded
    everything = index.VectorBatch(vi.stable_ids(title_ids(1500)), title_ids(1500), unit_vectors(1500))
    sample = index.smallest_ids(everything, 500)
    queries, training = index.split_sample(sample, 100)
    empty = vi.serialize(vi.train_empty_index("IVF32,Flat", 16, training.vectors))
    nprobes = [r["nprobe"] for r in manifest["recall_by_nprobe"]]
    old = [index.build_shard(s, batch, empty, queries, nprobes, str(tmp_path / "old"))
           for s, batch in index.split_by_shard(everything, 3)]
    assert index.recall_by_nprobe(old, queries) == {r["nprobe"]: r["recall_at_10"]
                                                    for r in manifest["recall_by_nprobe"]}
    loaded = load_index(version)
    probe = unit_vectors(50, seed=11)
    shards = [faiss.read_index(str(tmp_path / "old" / index_shard_name(s))) for s in range(3)]
    for shard in shards:
        vi.set_search_parameters(shard, manifest["nprobe"])
    old_ids = vi.merge_results([vi.search(shard, probe, 10) for shard in shards], 10)[1]
    assert loaded.search_ids(probe, 10)[1].tolist() == old_ids.tolist()


def test_ids_are_stable_across_builds_and_when_titles_are_added(small, tmp_path):
    """The module's 300-title build, a second build of its embeddings, and a build of 400 titles (the 300 and 100
    more, listed in reverse order)."""
    embeddings, first, _ = small
    vectors = np.concatenate([unit_vectors(300), unit_vectors(100, seed=1)])
    grown = write_embeddings(str(tmp_path / "grown"), title_ids(400)[::-1], vectors[::-1], files=4)
    build(embeddings, str(tmp_path / "again"))
    build(grown, str(tmp_path / "grown_index"))
    maps = []
    for root in (first, str(tmp_path / "again"), str(tmp_path / "grown_index")):
        version = versions.current_version_uri(root)
        table = pq.read_table(os.path.join(version, index_id_map_name(0)))
        maps.append(dict(zip(table.column("title_id").to_pylist(), table.column("id").to_pylist())))
    assert maps[0] == maps[1]
    assert maps[0].items() <= maps[2].items() and len(maps[2]) == 400


def test_the_recall_gate_fails_a_bad_configuration_and_publishes_nothing(sharded, shared_embeddings, tmp_path):
    good, version = sharded
    out = shutil.copytree(os.path.dirname(version), str(tmp_path / "index"))  # a good build is current
    bad = [*IVF_SHARDED, "index.nprobe=1", "index.tune_nprobe=false"]
    with pytest.raises(index.RecallTooLow, match=r"recall@10 0\.\d+ is below index.min_recall_at_10 0.95"):
        build(shared_embeddings, out, *bad)
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



def test_embeddings_that_are_all_one_vector_are_refused_in_one_line_and_current_stays(small, tmp_path, capsys):
    """A collapsed model maps every poster to one vector: exact search ties everywhere (recall@10 1.000). Over a
    copy of the module's good 300-title build."""
    _, published, good = small
    out = shutil.copytree(published, str(tmp_path / "index"))
    assert good["tied_neighbour_share"] == 0.0
    collapsed = write_embeddings(str(tmp_path / "collapsed"), title_ids(300), np.repeat(unit_vectors(1), 300, axis=0))
    assert index.main(["--embeddings", collapsed, "--out", out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("posters index: 100% of 300 queries have all top-10 neighbour scores tied")
    assert "nothing was published" in err and err.count("\n") == 1
    assert versions.read_current(out).version == good["version"]
    assert version_dirs(out) == [good["version"]]


def test_a_few_tied_queries_pass_and_the_share_is_in_the_manifest(tmp_path):
    """A third of the titles share one poster's vector (duplicates): their queries tie, the others do not."""
    vectors = unit_vectors(300)
    vectors[:100] = vectors[0]
    manifest = build(write_embeddings(str(tmp_path / "embeddings"), title_ids(300), vectors), str(tmp_path / "index"))
    assert manifest["tied_neighbour_share"] == pytest.approx(100 / 300, abs=1e-4)
    with pytest.raises(index.DegenerateScores, match="above index.max_tied_neighbour_share 0.2"):
        index.check_neighbour_scores(manifest, 0.2)
    index.check_neighbour_scores(manifest, None)  # switched off
