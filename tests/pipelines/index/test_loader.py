"""Loading a published index: checksums, model version, memory-mapping, and queries merged across shards."""
import os
import shutil

import numpy as np
import pytest
from apache_beam.testing import test_pipeline

from pipelines.common import versions
from pipelines.config import load_config
from pipelines.contracts import index_id_map_name, index_shard_name
from pipelines.index import pipeline as index
from pipelines.index.loader import IndexLoadError, load_index
from tests.pipelines.embeddings_fixture import MODEL_VERSION, title_ids, unit_vectors, write_embeddings

N = 1200
FLAT_SHARDED = ["index.num_shards=3"]
IVF_SHARDED = ["index.flat_max_vectors=100", "index.nlist=32", "index.num_shards=3", "index.recall_queries=100"]


def build(embeddings: str, out: str, overrides: list[str]) -> str:
    index.build_and_publish(load_config(None, overrides), embeddings, out, test_pipeline=test_pipeline.TestPipeline())
    return out


def brute_force(queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
    scores = queries @ unit_vectors(N).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = np.array(title_ids(N))
    return names[rows].tolist(), np.take_along_axis(scores, rows, 1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A Flat and an IVF index, each in 3 shards, over the same N titles (built once for this module)."""
    base = tmp_path_factory.mktemp("indexes")
    embeddings = write_embeddings(str(base / "embeddings"), title_ids(N), unit_vectors(N), files=2)
    return {"flat": build(embeddings, str(base / "flat"), FLAT_SHARDED),
            "ivf": build(embeddings, str(base / "ivf"), IVF_SHARDED)}


@pytest.fixture
def flat_copy(built, tmp_path):
    """A copy of the Flat index that a test may damage."""
    return shutil.copytree(built["flat"], str(tmp_path / "flat"))


def test_a_sharded_flat_index_answers_exactly_like_brute_force(built):
    queries = unit_vectors(25, seed=7)
    found, scores = load_index(built["flat"]).search(queries, 10)
    expected, expected_scores = brute_force(queries, 10)
    assert found == expected
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_a_sharded_ivf_index_searching_every_list_answers_exactly(built):
    loaded = load_index(built["ivf"])
    loaded.set_nprobe(32)
    queries = unit_vectors(25, seed=7)
    assert loaded.search(queries, 10)[0] == brute_force(queries, 10)[0]


def test_the_ivf_index_at_its_tuned_nprobe_finds_most_exact_neighbours(built):
    loaded = load_index(built["ivf"])
    assert loaded.nprobe == loaded.manifest["nprobe"] < 32
    queries = unit_vectors(200, seed=8)
    found, _ = loaded.search(queries, 10)
    expected, _ = brute_force(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected)]) >= 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_memory_mapped_shards_answer_the_same(built, kind):
    queries = unit_vectors(10, seed=9)
    in_memory, mapped = load_index(built[kind]), load_index(built[kind], mmap=True)
    assert mapped.search(queries, 5)[0] == in_memory.search(queries, 5)[0]


def test_the_index_knows_its_version_model_and_titles(built):
    loaded = load_index(built["flat"], expected_model_version=MODEL_VERSION)
    assert loaded.version == versions.read_current(built["flat"]).version
    assert (loaded.model_version, loaded.dim, len(loaded)) == (MODEL_VERSION, 16, N)
    assert "tt0000005" in loaded and "tt9999999" not in loaded


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_vector_returns_the_indexed_embedding(built, kind):
    loaded = load_index(built[kind])
    np.testing.assert_allclose(loaded.vector("tt0000033"), unit_vectors(N)[33], rtol=1e-6)
    np.testing.assert_allclose(loaded.vectors(["tt0000001", "tt0000002"]), unit_vectors(N)[1:3], rtol=1e-6)
    with pytest.raises(KeyError, match="tt9999999"):
        loaded.vector("tt9999999")


def test_a_version_directory_loads_directly(built):
    version = versions.current_version_uri(built["flat"])
    assert load_index(version).version == os.path.basename(version)


def test_another_model_s_index_is_refused(built):
    with pytest.raises(IndexLoadError, match="holds embeddings of model 'model-test-1', not 'model-test-2'"):
        load_index(built["flat"], expected_model_version="model-test-2")


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("file", [index_shard_name(1), index_id_map_name(1)])
def test_one_flipped_byte_is_detected(flat_copy, file, mmap):
    path = os.path.join(versions.current_version_uri(flat_copy), file)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(IndexLoadError, match=f"{file} is corrupted: sha256"):
        load_index(flat_copy, mmap=mmap)


def test_a_missing_shard_is_a_clear_error(flat_copy):
    os.remove(os.path.join(versions.current_version_uri(flat_copy), index_shard_name(2)))
    with pytest.raises(IndexLoadError, match=f"{index_shard_name(2)} is missing"):
        load_index(flat_copy)


def test_nothing_published_is_a_clear_error(tmp_path):
    with pytest.raises(IndexLoadError, match="build one with `posters index`"):
        load_index(str(tmp_path))


def test_a_catalog_smaller_than_k_returns_what_there_is(tmp_path):
    embeddings = write_embeddings(str(tmp_path / "embeddings"), title_ids(4), unit_vectors(4), files=1)
    loaded = load_index(build(embeddings, str(tmp_path / "index"), ["index.num_shards=2"]))
    found, scores = loaded.search(unit_vectors(2, seed=3), 10)
    assert [sorted(row) for row in found] == [title_ids(4)] * 2
    assert np.isfinite(scores[:, :4]).all() and np.isneginf(scores[:, 4:]).all()


def test_an_index_built_and_published_on_gcs_loads_memory_mapped(fake_gcs, tmp_path):
    vectors = unit_vectors(300)
    embeddings = write_embeddings(fake_gcs.uri("embeddings"), title_ids(300), vectors, files=2)
    out = build(embeddings, fake_gcs.uri("index"), ["index.num_shards=2"])
    loaded = load_index(out, expected_model_version=MODEL_VERSION, mmap=True, cache_dir=str(tmp_path / "cache"))
    assert loaded.search(vectors[7], 1)[0] == [["tt0000007"]]
    assert sorted(os.listdir(tmp_path / "cache" / loaded.version)) == [index_shard_name(0), index_shard_name(1)]


def test_neighbors_of_indexed_titles_leave_the_title_itself_out(built):
    loaded = load_index(built["flat"])
    found, scores = loaded.neighbors(["tt0000010", "tt0000020"], 5)
    expected, expected_scores = brute_force(unit_vectors(N)[[10, 20]], 6)
    assert found == [row[1:] for row in expected]
    np.testing.assert_allclose(scores, expected_scores[:, 1:], rtol=1e-5)


def test_an_empty_current_is_an_error_that_names_it_and_says_what_to_do(built, tmp_path):
    """It used to be json's bare "Expecting value: line 1 column 1 (char 0)", naming no file."""
    root = str(tmp_path / "flat")
    shutil.copytree(built["flat"], root)
    current = os.path.join(root, versions.POINTER_FILE)
    open(current, "wb").close()
    with pytest.raises(versions.UnreadablePointer, match=f"^{current} is empty: it must name the live index "
                                                         "version; write .* or delete it and publish again"):
        load_index(root)


def test_a_local_copy_is_verified_once_and_then_mapped_without_hashing_again(flat_copy, monkeypatch):
    from pipelines.index import loader

    copy = loader.local_copy(flat_copy)
    hashed = []
    monkeypatch.setattr(loader, "_file_sha256", lambda path: hashed.append(path) or "")
    mapped = load_index(copy, mmap=True, verified=True)
    assert hashed == [] and mapped.mode == "mmap" and load_index(flat_copy).mode == "memory"
    queries = unit_vectors(10, seed=9)
    assert mapped.search(queries, 5)[0] == brute_force(queries, 5)[0]


def test_a_local_copy_of_a_damaged_shard_is_refused(flat_copy):
    from pipelines.index import loader

    path = os.path.join(versions.current_version_uri(flat_copy), index_shard_name(0))
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(IndexLoadError, match=f"{index_shard_name(0)} is corrupted"):
        loader.local_copy(flat_copy)
