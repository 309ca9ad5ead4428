"""Near-duplicate retrieval: edited copies of eval posters must find their original in the whole catalog.

Real catalogs hold the same poster several times, re-encoded or resized by a CDN. Each copied poster gets four
edits — `reencoded` (the same pixels as PNG), `rescaled` (50–80 % of its size), `cropped` (2–6 % off each side)
and `recompressed` (JPEG quality 20–40) — drawn from a generator seeded by (seed, title_id), so a copy is the
same bytes on every run and machine whatever the order or the number of posters copied.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pipelines.common.retrieval_metrics import DIGITS, top_k
from pipelines.evaluate.reference import decode_rgb

EDITS = ("reencoded", "rescaled", "cropped", "recompressed")


def _generator(seed: int, title_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(title_id.encode()).digest()[:8], "big")])


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def edited_copy(poster: bytes, edit: str, rng: np.random.Generator) -> bytes:
    """One edited copy of an encoded poster (see the module docstring for the edits)."""
    image = decode_rgb(poster)
    width, height = image.size
    if edit == "reencoded":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if edit == "rescaled":
        scale = float(rng.uniform(0.5, 0.8))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return _jpeg(image.resize(size, Image.Resampling.LANCZOS), 90)
    if edit == "cropped":
        left, top, right, bottom = rng.uniform(0.02, 0.06, size=4)
        box = (round(width * left), round(height * top), width - round(width * right), height - round(height * bottom))
        return _jpeg(image.crop(box), 90)
    if edit == "recompressed":
        return _jpeg(image, int(rng.integers(20, 41)))
    raise ValueError(f"unknown edit {edit!r}; choose one of {', '.join(EDITS)}")


def near_duplicate_copies(posters: Sequence[tuple[str, bytes]], seed: int) -> list[tuple[str, str, bytes]]:
    """(title_id, edit, copy bytes) for every poster and every edit, in input order."""
    copies = []
    for title_id, poster in posters:
        rng = _generator(seed, title_id)
        copies.extend((title_id, edit, edited_copy(poster, edit, rng)) for edit in EDITS)
    return copies


def near_duplicate_recall(copies: np.ndarray, originals: np.ndarray, database: np.ndarray, edits: Sequence[str],
                          ks: Sequence[int] = (1, 10)) -> dict:
    """`copies` [m, d] queried against `database` [N, d]; `originals[i]` is the database row copy i came from.
    → {"recall_at_<k>": share of copies whose original is in their top k, "copies", "by_edit": {edit: …}}."""
    found = top_k(copies, database, max(ks))
    rank_hit = found == np.asarray(originals)[:, None]

    def measures(rows: np.ndarray) -> dict:
        return {**{f"recall_at_{k}": round(float(rank_hit[rows, :k].any(axis=1).mean()), DIGITS) for k in ks},
                "copies": int(rows.sum())}

    edits = np.asarray(edits)
    return {**measures(np.ones(len(edits), bool)),
            "by_edit": {edit: measures(edits == edit) for edit in dict.fromkeys(edits.tolist())}}
