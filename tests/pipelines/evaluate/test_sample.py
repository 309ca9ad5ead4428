"""The evaluation's stable sample: its size follows `evaluate.max_titles`, it is the same whatever the file order,
it is read batch by batch, and a catalog that fits is taken whole, exactly as the whole reader reads it."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common.splits import is_eval
from pipelines.contracts import SUCCESS_FILE, embeddings_schema
from pipelines.embed.reader import EmbeddingsError, describe_embeddings, read_embeddings
from pipelines.evaluate import sample as evaluation_sample

DIM = 8


def _write_parts(directory, parts: list[list[str]], seed: int = 0) -> dict[str, np.ndarray]:
    """One Parquet file per list of title ids (no manifest: read as the directory's `*.parquet`)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng, vectors = np.random.default_rng(seed), {}
    for number, titles in enumerate(parts):
        values = rng.normal(size=(len(titles), DIM)).astype(np.float32)
        vectors.update(zip(titles, values))
        pq.write_table(pa.table({
            "title_id": titles,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), DIM),
            "image_sha256": [f"sha-{t}" for t in titles],
            "model_version": ["m1"] * len(titles),
            "genres": [["Drama"] if i % 2 else ["Comedy", "Drama"] for i in range(len(titles))],
        }, schema=embeddings_schema(DIM, "m1")), directory / f"part-{number:05d}.parquet")
    (directory / SUCCESS_FILE).write_text("")
    return vectors


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """4,000 titles in three files of unequal size."""
    titles = [f"tt{i:07d}" for i in range(4000)]
    root = tmp_path_factory.mktemp("sample")
    vectors = _write_parts(root / "embeddings", [titles[:1500], titles[1500:1600], titles[1600:]])
    return {"uri": str(root / "embeddings"), "titles": titles, "vectors": vectors}


def test_the_sample_holds_about_max_titles_whatever_the_order_and_each_split_in_its_proportion():
    titles = [f"tt{i:07d}" for i in range(20_000)]
    fraction = evaluation_sample.sample_fraction(len(titles), 2_000)
    picked = [t for t in titles if evaluation_sample.in_sample(t, fraction)]
    # a binomial(20000, 0.1) draw: ±5 standard deviations (≈ 212) around 2,000
    assert abs(len(picked) - 2_000) < 212
    assert [t for t in reversed(titles) if evaluation_sample.in_sample(t, fraction)] == picked[::-1]
    # independent of the eval split (another part of the digest): ≈ 20 % of the sample is eval, as in the catalog
    eval_share = np.mean([is_eval(t, 0.2) for t in picked])
    assert 0.15 < eval_share < 0.25


def test_a_catalog_that_fits_is_sampled_whole_without_hashing():
    assert evaluation_sample.sample_fraction(50_000, 50_000) == 1.0
    assert all(evaluation_sample.in_sample(f"t{i}", 1.0) for i in range(1000))


def test_a_catalog_that_fits_reads_as_the_whole_reader_reads_it(catalog):
    drawn = evaluation_sample.read_sample(catalog["uri"], max_titles=4000, batch_rows=256)
    whole = read_embeddings(catalog["uri"])
    assert drawn.whole and drawn.catalog_titles == 4000
    assert drawn.embeddings.title_ids == whole.title_ids and drawn.embeddings.genres == whole.genres
    assert drawn.embeddings.image_sha256 == whole.image_sha256
    np.testing.assert_array_equal(drawn.embeddings.vectors, whole.vectors)


def test_a_larger_catalog_is_read_batch_by_batch_and_keeps_the_hashed_titles_in_file_order(catalog):
    fraction = evaluation_sample.sample_fraction(4000, 1000)
    batches = list(evaluation_sample.sampled_batches(describe_embeddings(catalog["uri"]).files,
                                                     fraction, DIM, "m1", batch_rows=256))
    assert max(b.num_rows for b in batches) <= 256
    drawn = evaluation_sample.read_sample(catalog["uri"], max_titles=1000, batch_rows=256)
    expected = [t for t in catalog["titles"] if evaluation_sample.in_sample(t, fraction)]
    assert not drawn.whole and drawn.fraction == 0.25
    assert drawn.embeddings.title_ids == expected == [t for b in batches for t in b.column("title_id").to_pylist()]
    assert abs(len(expected) - 1000) < 140  # binomial(4000, 0.25): ±5 standard deviations
    np.testing.assert_array_equal(drawn.embeddings.vectors, np.stack([catalog["vectors"][t] for t in expected]))


def test_rows_of_another_model_in_a_sampled_file_are_an_error(tmp_path):
    titles = [f"tt{i}" for i in range(10)]
    table = pa.table({"title_id": titles,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(10 * DIM, np.float32)), DIM),
                      "image_sha256": titles, "model_version": ["m1"] * 9 + ["m2"], "genres": [["Drama"]] * 10},
                     schema=embeddings_schema(DIM, "m1"))
    pq.write_table(table, tmp_path / "part.parquet")
    with pytest.raises(EmbeddingsError, match="model_version"):
        evaluation_sample.read_sample(str(tmp_path / "part.parquet"), max_titles=5)
