"""`posters bench embed|index`: benchmarks that run a stage beside its baseline in one process, as ratios."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "embed": ("pipelines.bench.embed:main", "bare model vs decode+model vs the Beam embed pipeline"),
    "index": ("pipelines.bench.index:main", "exact flat search vs the built index at several nprobe"),
    "train-input": ("trainer.input_bench:main", "streamed train input vs the same batches from in-memory tensors"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        lines = ["usage: posters bench {embed,index} [--help] [ARGS...]", ""]
        lines += [f"  {name:<6} {summary}" for name, (_, summary) in BENCHMARKS.items()]
        print("\n".join(lines), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module_name, _, function = BENCHMARKS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module_name), function)(argv[1:]) or 0
