"""`posters`: the one console entry point. Each subcommand lives in its own module and parses its own flags.

Subcommands are imported lazily, so `posters --help` is instant and a command only loads what it uses
(TensorFlow, Beam, faiss). Each target is `module:function` taking `argv` (the arguments after the name).
`STEPS` are two-word commands (`posters index publish …`): the steps a scheduler runs between Dataflow jobs.
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

STEPS = {  # pipelines/nightly/steps.py: what the Composer DAG runs in a pod between its Dataflow jobs
    "embed publish": ("pipelines.nightly.steps:embed_publish_main",
                      "after an embed job: accounting, error budget, publish (fenced by the nightly lock)"),
    "nightly evaluate": ("pipelines.nightly.steps:evaluate_main",
                         "evaluate the night's embeddings; a failed gate stops the night before the index"),
    "index publish": ("pipelines.nightly.steps:index_publish_main",
                      "after an index job: recall gate, then the CURRENT swap fenced by the nightly lock"),
    "candidates publish": ("pipelines.nightly.steps:candidates_publish_main",
                           "after a candidates job: check and publish (fenced by the nightly lock)"),
    "nightly report": ("pipelines.nightly.steps:report_main",
                       "overlap@k with the last finished night; finishes the night (summary.json, _SUCCESS)"),
}


def usage() -> str:
    width = max(map(len, [*SUBCOMMANDS, *STEPS]))
    lines = ["usage: posters COMMAND [--help] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "steps between Dataflow jobs (the Composer DAG's):"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in STEPS.items()]
    return "\n".join(lines)


def command_for(argv: list[str]):
    """(the function, its arguments) for a command line, or None when it names no command."""
    two = " ".join(argv[:2])
    if two in STEPS:
        target, rest = STEPS[two][0], argv[2:]
    elif argv[0] in SUBCOMMANDS:
        target, rest = SUBCOMMANDS[argv[0]][0], argv[1:]
    else:
        return None
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function), rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    found = command_for(argv)
    if found is None:
        print(f"posters: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    command, rest = found
    return command(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
