"""The split rule's parts: the poster difference hash, LSH band keys, and duplicate-poster groups in Beam."""
import hashlib
import io
from types import SimpleNamespace

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipelines.common.splits import band_keys, band_positions, hamming, poster_dhash, split_of
from pipelines.config import load_config
from pipelines.preprocess.duplicates import GroupDuplicatePosters, near_links, star_links
from pipelines.synthetic.catalog import copied_poster, generate_catalog

SIZE = 16  # the default preprocess.near_duplicate_hash_size


def png_with_dhash(bits: np.ndarray) -> bytes:
    """A (SIZE + 1) × SIZE grayscale PNG whose difference hash is `bits` (at its own size the resize is exact)."""
    rows = np.where(bits.reshape(SIZE, SIZE), 5, -5).cumsum(axis=1) + 128
    pixels = np.concatenate([np.full((SIZE, 1), 128), rows], axis=1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "PNG")
    return buffer.getvalue()


def flipped(bits: np.ndarray, positions) -> np.ndarray:
    out = bits.copy()
    out[list(positions)] ^= 1
    return out


def as_int(bits: np.ndarray) -> int:
    return int("".join(map(str, bits)), 2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("catalog")
    generate_catalog(directory, n=12, seed=5, width=96, height=144)
    return [(directory / "posters" / f"tt{i:07d}.jpg").read_bytes() for i in range(1, 13)]


def test_dhash_reads_the_bits_it_was_drawn_with():
    bits = np.random.default_rng(0).integers(0, 2, SIZE * SIZE).astype(np.uint8)
    assert poster_dhash(png_with_dhash(bits), SIZE) == as_int(bits)


def test_a_reencoded_copy_is_near_and_distinct_posters_are_far(generated):
    """Distances on the generator's posters against the default preprocess.near_duplicate_max_distance (20)."""
    limit = load_config("local.yaml", []).preprocess.near_duplicate_max_distance
    hashes = [poster_dhash(poster, SIZE) for poster in generated]
    copies = [poster_dhash(copied_poster(poster, "reencoded"), SIZE) for poster in generated]
    assert all(hamming(a, b) <= limit for a, b in zip(hashes, copies))
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > limit
    assert poster_dhash(copied_poster(generated[0], "identical"), SIZE) == hashes[0]


def test_band_keys_are_stable_and_near_hashes_share_one():
    positions = band_positions(SIZE * SIZE)
    assert [p.tolist() for p in positions] == [p.tolist() for p in band_positions(SIZE * SIZE)]
    bits = np.random.default_rng(1).integers(0, 2, SIZE * SIZE).astype(np.uint8)
    near = flipped(bits, range(0, 140, 10))  # 14 bits apart: what a re-encoded copy differs by at most
    keys = set(band_keys(as_int(bits), positions, SIZE * SIZE))
    assert len(keys) == len(positions) and keys & set(band_keys(as_int(near), positions, SIZE * SIZE))


def test_links_are_stars_and_pairs_within_the_distance():
    assert star_links(["c", "a", "b", "a"]) == [("a", "b"), ("a", "c")]
    assert near_links([("x", 0b1111), ("y", 0b0111), ("z", 0b0000)], 1) == [("x", "y")]


def _poster(title_id: str, data: bytes):
    return (SimpleNamespace(title_id=title_id),
            SimpleNamespace(image_bytes=data, sha256=hashlib.sha256(data).hexdigest()))


def test_a_chain_of_near_duplicates_and_identical_bytes_is_one_group_named_by_its_smallest_title():
    """a ~ b ~ c (12 bits apart each, a and c 24 apart: beyond the distance), d has c's bytes, e is alone."""
    bits = np.random.default_rng(2).integers(0, 2, SIZE * SIZE).astype(np.uint8)
    b_bits = flipped(bits, range(0, 120, 10))
    c_bits = flipped(b_bits, range(5, 125, 10))
    e_bits = flipped(bits, range(0, 256, 2))
    posters = [_poster("t-b", png_with_dhash(b_bits)), _poster("t-a", png_with_dhash(bits)),
               _poster("t-c", png_with_dhash(c_bits)), _poster("t-d", png_with_dhash(c_bits)),
               _poster("t-e", png_with_dhash(e_bits))]
    config = load_config("local.yaml", ["preprocess.duplicate_group_rounds=3"]).preprocess  # the chain's diameter
    with BeamTestPipeline() as pipeline:
        labels, groups, stats = pipeline | beam.Create(posters) | GroupDuplicatePosters(config)
        assert_that(labels, equal_to([(t, "t-a") for t in ("t-a", "t-b", "t-c", "t-d")]), label="Labels")
        split = split_of("t-a", config.eval_fraction)
        assert_that(groups | "Rows" >> beam.Map(lambda r: (r["title_id"], r["split"])),
                    equal_to([(t, split) for t in ("t-a", "t-b", "t-c", "t-d")]), label="GroupRows")
        totals = stats | beam.CombinePerKey(sum)
        assert_that(totals, equal_to([(("titles_in_duplicate_groups", ""), 4), (("duplicate_groups", ""), 1)]),
                    label="Stats")


def test_too_few_rounds_for_a_chain_are_counted_as_unsettled_links():
    bits = np.random.default_rng(3).integers(0, 2, SIZE * SIZE).astype(np.uint8)
    chain = [bits]
    for step in range(4):  # t0 ~ t1 ~ t2 ~ t3 ~ t4, each 12 bits from the last, in different bits
        chain.append(flipped(chain[-1], range(step, 240, 20)))
    posters = [_poster(f"t{i}", png_with_dhash(b)) for i, b in enumerate(chain)]
    config = load_config("local.yaml", ["preprocess.duplicate_group_rounds=1"]).preprocess

    with BeamTestPipeline() as pipeline:
        _, _, stats = pipeline | beam.Create(posters) | GroupDuplicatePosters(config)
        unsettled = (stats | beam.Filter(lambda pair: pair[0][0] == "unsettled_duplicate_links")
                     | beam.CombinePerKey(sum) | beam.Map(lambda pair: pair[1] > 0))
        assert_that(unsettled, equal_to([True]))
