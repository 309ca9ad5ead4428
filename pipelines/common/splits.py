"""The one train/eval split rule, shared by preprocess (which writes the splits) and evaluate (which scores
the eval split of the published embeddings)."""
from __future__ import annotations

import hashlib


def is_eval(title_id: str, eval_fraction: float) -> bool:
    """The stable split: a title is in eval when the sha256 of its id, read as a fraction of 2**64, is below
    `eval_fraction` — the same on every run, worker and machine, and independent of the catalog's order."""
    digest = hashlib.sha256(title_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < eval_fraction
