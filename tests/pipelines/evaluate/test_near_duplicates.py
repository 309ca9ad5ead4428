"""Near-duplicates: the edited copies are the same bytes on every run, and an exact copy finds its original."""
import io

import numpy as np
import pytest
from PIL import Image

from pipelines.evaluate.near_duplicates import EDITS, edited_copy, near_duplicate_copies, near_duplicate_recall


def _poster(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (60, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


POSTERS = [("tt1", _poster(1)), ("tt2", _poster(2)), ("tt3", _poster(3))]


def test_copies_are_deterministic_per_seed_and_title_whatever_the_order():
    first = near_duplicate_copies(POSTERS, seed=7)
    assert first == near_duplicate_copies(POSTERS, seed=7)
    reordered = {(t, e): c for t, e, c in near_duplicate_copies(POSTERS[::-1], seed=7)}
    assert {(t, e): c for t, e, c in first} == reordered
    assert first != near_duplicate_copies(POSTERS, seed=8)
    assert [(t, e) for t, e, _ in first] == [(t, e) for t, _ in POSTERS for e in EDITS]


def test_each_edit_does_what_it_says():
    copies = {edit: Image.open(io.BytesIO(c)) for _, edit, c in near_duplicate_copies(POSTERS[:1], seed=0)}
    assert copies["reencoded"].format == "PNG" and copies["reencoded"].size == (40, 60)
    assert copies["rescaled"].format == "JPEG" and 20 <= copies["rescaled"].width <= 32
    assert 34 <= copies["cropped"].width < 40 and 52 <= copies["cropped"].height < 60
    assert copies["recompressed"].format == "JPEG" and copies["recompressed"].size == (40, 60)
    with pytest.raises(ValueError, match="choose one of"):
        edited_copy(POSTERS[0][1], "mirrored", np.random.default_rng(0))


def test_recall_counts_the_original_in_the_top_k():
    """Database rows 0..3; copy 0 is row 0 itself (rank 1), copy 1 of row 1 sits nearest row 2 (rank 2), copy 2
    of row 3 points away from it (not in the top 2): recall@1 = 1/3, recall@2 = 2/3."""
    database = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], np.float32)
    copies = np.array([[1, 0], [0.62, 0.78], [1, 0.1]], np.float32)
    result = near_duplicate_recall(copies, np.array([0, 1, 3]), database, ["a", "b", "a"], ks=(1, 2))
    assert result["recall_at_1"] == pytest.approx(1 / 3, abs=1e-4)
    assert result["recall_at_2"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["by_edit"] == {"a": {"recall_at_1": 0.5, "recall_at_2": 0.5, "copies": 2},
                                 "b": {"recall_at_1": 0.0, "recall_at_2": 1.0, "copies": 1}}
