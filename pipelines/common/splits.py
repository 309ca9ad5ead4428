"""The one train/eval split rule, shared by preprocess (which writes the splits) and evaluate (which scores
the eval split of the published embeddings).

A title's split key is its split group's id: titles whose posters are byte-identical or near-identical are one
group (found by `posters preprocess`, `pipelines.preprocess.duplicates`, and written to its output's
`duplicate_groups/`), keyed by the group's smallest title_id; a title in no group is keyed by its own id. So the
same poster never sits on both sides, and a catalog without duplicates splits as it did by title id alone.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping

import numpy as np

from pipelines.common import storage
from pipelines.contracts import DUPLICATE_GROUPS_DIR

TRAIN, EVAL = "train", "eval"


def is_eval(key: str, eval_fraction: float) -> bool:
    """The stable split: a split key (a group id, or a title id) is in eval when the sha256 of it, read as a
    fraction of 2**64, is below `eval_fraction` — the same on every run, worker and machine, and independent of
    the catalog's order."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < eval_fraction


def split_of(title_id: str, eval_fraction: float, groups: Mapping[str, str] | None = None) -> str:
    """"train" or "eval" for a title; `groups` maps the titles that are in a duplicate group to its id."""
    key = groups.get(title_id, title_id) if groups else title_id
    return EVAL if is_eval(key, eval_fraction) else TRAIN


def read_duplicate_groups(preprocess_dir: str, titles: set[str] | None = None) -> dict[str, str]:
    """title_id → group_id of the titles in a duplicate group, from a preprocess output (holds only titles that
    share a poster with another; with `titles`, only those of them, read one file at a time). A preprocess
    output without `duplicate_groups/` (written before it existed) is a ValueError that says to rerun preprocess."""
    import pyarrow.parquet as pq

    directory = storage.join(preprocess_dir, DUPLICATE_GROUPS_DIR)
    files = [path for path in storage.list_files(directory) if path.endswith(".parquet")]
    if not files:
        raise ValueError(f"{directory}: no duplicate groups (written by `posters preprocess` since leak-free "
                         "splits); rerun preprocess, or leave out --preprocess to split by title_id alone")
    groups = {}
    for path in files:
        table = pq.read_table(io.BytesIO(storage.read_bytes(path)), columns=["title_id", "group_id"])
        groups.update((title, group) for title, group in zip(table.column("title_id").to_pylist(),
                                                             table.column("group_id").to_pylist())
                      if titles is None or title in titles)
    return groups


# --- near-identical posters: a difference hash, compared by Hamming distance --------------------------------

def poster_dhash(image_bytes: bytes, hash_size: int) -> int:
    """The difference hash of an encoded poster: grayscale, resized (Lanczos) to (hash_size + 1) × hash_size,
    one bit per horizontally adjacent pair (left darker than right); `hash_size`² bits as an int."""
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as image:
        small = image.convert("L").resize((hash_size + 1, hash_size), Image.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big") >> (-bits.size % 8)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


LSH_BANDS = 20  # bands of bit positions drawn (seeded) from the hash; two hashes that agree on one are compared
LSH_BAND_BITS = 24  # bits per band: ~0.6 distinct hashes per band value at 10M titles, so compared groups stay small


def band_positions(bits: int, bands: int = LSH_BANDS, band_bits: int = LSH_BAND_BITS) -> list[np.ndarray]:
    """The bit positions of each LSH band of a `bits`-bit hash: the same on every machine (a fixed seed).

    Two hashes d bits apart agree on a band with probability ≈ (1 - d/bits)^band_bits, so they are compared
    with probability 1 - (1 - that)^bands: for 256 bits, 0.996 at d = 14 and 0.94 at d = 20."""
    rng = np.random.default_rng(20_240_701)
    return [np.sort(rng.permutation(bits)[:min(band_bits, bits)]) for _ in range(bands)]


def band_keys(dhash: int, positions: list[np.ndarray], bits: int) -> list[tuple[int, int]]:
    """(band number, the hash's bits at that band's positions) for each band."""
    as_bits = np.array([(dhash >> (bits - 1 - i)) & 1 for i in range(bits)], dtype=np.uint8)
    return [(band, int.from_bytes(np.packbits(as_bits[where]).tobytes(), "big")) for band, where in
            enumerate(positions)]
