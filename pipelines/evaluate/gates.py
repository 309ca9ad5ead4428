"""Gates on an evaluation: minimums from `config.evaluate` and the largest drop allowed from the previous night.

    failures = check_gates(evaluation, config.evaluate, previous=yesterdays_evaluation)   # [] when all pass

A gate whose measure is missing from the evaluation fails (a night that could not measure is not a good night);
a minimum set to None in the config switches its gate off. `gate_files` does the same from evaluation.json URIs;
`enforce_gates(evaluation)` raises `GateFailed` on the failures `posters evaluate` recorded.
"""
from __future__ import annotations

from typing import Optional

from pipelines.common import storage
from pipelines.config import EvaluateConfig


def headline_measures(evaluation: dict) -> dict[str, Optional[float]]:
    """The few numbers compared night to night: name → value (None when not measured)."""
    k = evaluation.get("k", 10)

    def at(*path):
        node = evaluation
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return node

    return {
        f"retrieval precision@{k}": at("retrieval", "embedding", f"precision_at_{k}"),
        "retrieval mAP@R": at("retrieval", "embedding", "map_at_r"),
        "near-duplicate recall@1": at("near_duplicates", "embedding", "recall_at_1"),
        f"candidates hit rate@{k}": at("candidates", "methods", "content", f"hit_rate_at_{k}"),
    }


def check_gates(evaluation: dict, config: EvaluateConfig, previous: Optional[dict] = None) -> list[str]:
    """One line per failed gate (empty: every gate passed)."""
    failures = []
    k = evaluation.get("k", config.k)
    measures = headline_measures(evaluation)
    recall = measures["near-duplicate recall@1"]
    if config.min_near_duplicate_recall_at_1 is not None:
        if recall is None:
            failures.append("near-duplicate recall@1 was not measured (posters evaluate needs --model)")
        elif recall < config.min_near_duplicate_recall_at_1:
            failures.append(f"near-duplicate recall@1 {recall:.3f} < evaluate.min_near_duplicate_recall_at_1 "
                            f"{config.min_near_duplicate_recall_at_1}")
    if config.min_hit_rate_vs_popularity is not None:
        methods = (evaluation.get("candidates") or {}).get("methods", {})
        content, popular = (methods.get(m, {}).get(f"hit_rate_at_{k}") for m in ("content", "most_watched"))
        if content is None or popular is None:
            failures.append(f"candidates hit rate@{k} was not measured (posters evaluate needs --history)")
        elif content < config.min_hit_rate_vs_popularity * popular:
            failures.append(f"candidates hit rate@{k} {content:.3f} < {config.min_hit_rate_vs_popularity} × the "
                            f"most-watched baseline's {popular:.3f} (evaluate.min_hit_rate_vs_popularity)")
    if previous is not None and config.max_drop_from_previous is not None:
        for name, before in headline_measures(previous).items():
            now = measures.get(name)
            if before and now is not None and (before - now) / before > config.max_drop_from_previous:
                failures.append(f"{name} dropped {100 * (before - now) / before:.1f} % from the previous run "
                                f"({before:.3f} → {now:.3f}; evaluate.max_drop_from_previous "
                                f"{config.max_drop_from_previous})")
    return failures


def gate_files(evaluation_uri: str, config: EvaluateConfig, previous_uri: Optional[str] = None) -> list[str]:
    """`check_gates` on evaluation.json files (the previous one is skipped when it does not exist)."""
    previous = storage.read_json(previous_uri) if previous_uri and storage.exists(previous_uri) else None
    return check_gates(storage.read_json(evaluation_uri), config, previous)


class GateFailed(RuntimeError):
    """An evaluation that failed a gate: the message lists every failure."""


def enforce_gates(evaluation: dict) -> None:
    """Raises `GateFailed` when the evaluation (as `posters evaluate` returns it) failed a gate; the nightly's
    one line after `pipelines.evaluate.command.run(...)`."""
    failures = (evaluation.get("gates") or {}).get("failures") or []
    if failures:
        raise GateFailed(f"{len(failures)} evaluation gate(s) failed: " + "; ".join(failures))
