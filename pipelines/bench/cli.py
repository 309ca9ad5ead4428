"""`posters bench NAME`: benchmarks that run a stage beside its baseline, as ratios."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "embed": ("pipelines.bench.embed:main", "bare model vs decode+model vs the Beam embed pipeline"),
    "index": ("pipelines.bench.index:main", "every index backend and setting at recall@10 targets"),
    "nightly": ("pipelines.bench.nightly:main", "embed → index → candidates, each stage beside the bare library"),
    "scale": ("pipelines.bench.scale:main", "index, candidates and the overlap report at growing N: time, memory"),
    "check-gpu": ("pipelines.bench.check_gpu:main", "a tiny job: fails unless TensorFlow on the workers sees a GPU"),
    "scale-catalog": ("pipelines.bench.scale_catalog:main", "catalog read, preprocess, embed at growing N: time, RSS"),
    "train-input": ("trainer.input_bench:main", "streamed train input vs the same batches from in-memory tensors"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        lines = ["usage: posters bench {" + ",".join(BENCHMARKS) + "} [--help] [ARGS...]", ""]
        lines += [f"  {name:<13} {summary}" for name, (_, summary) in BENCHMARKS.items()]
        print("\n".join(lines), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module_name, _, function = BENCHMARKS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module_name), function)(argv[1:]) or 0
