"""`posters`: the one console entry point. Each subcommand lives in its own module and parses its own flags.

Subcommands are imported lazily, so `posters --help` is instant and a command only loads what it uses
(TensorFlow, Beam, faiss). Each target is `module:function` taking `argv` (the arguments after the name).
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "generate-catalog": ("pipelines.synthetic.catalog:main", "write a synthetic poster catalog (JPEGs + manifest)"),
    "preprocess": ("pipelines.preprocess.pipeline:main",
                   "validate a catalog and write tensorflow-transform training data"),
    "train": ("trainer.train:main", "two-phase training (genre warm-up, triplet metric learning) and export"),
    "export-model": ("trainer.export:main", "export the config's model untrained (benchmarks, smoke tests)"),
    "embed": ("pipelines.embed.pipeline:main", "embed a catalog with an exported model into Parquet (incremental)"),
    "index": ("pipelines.index.pipeline:main", "build, verify and publish a sharded FAISS index; `index rollback`"),
    "candidates": ("pipelines.candidates.pipeline:main", "item→item and user→item candidates from the published index"),
    "evaluate": ("pipelines.evaluate.command:main", "offline evaluation of embeddings and candidates → report.html"),
    "nightly": ("pipelines.nightly.chain:main", "the nightly chain: embed → evaluate → index → candidates for a date"),
    "gc": ("pipelines.common.retention:main",
           "remove partial index versions and staging directories that killed runs left behind"),
    "similar": ("pipelines.similar.contact_sheets:similar_main",
                "contact sheet of a poster and its nearest neighbours"),
    "mix": ("pipelines.similar.contact_sheets:mix_main", "contact sheet of the neighbours of averaged posters"),
    "bench": ("pipelines.bench.cli:main", "benchmarks: `bench embed`, `bench index`"),
    "demo": ("pipelines.demo:main", "the main job end to end on the embedded synthetic catalog"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: posters COMMAND [--help] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"posters: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = SUBCOMMANDS[name][0].partition(":")
    command = getattr(importlib.import_module(module_name), function)
    return command(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
