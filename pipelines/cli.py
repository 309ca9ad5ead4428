"""`posters`: the one console entry point. Each subcommand lives in its own module and parses its own flags.

Subcommands are imported lazily, so `posters --help` is instant and a command only loads what it uses
(TensorFlow, Beam, faiss). Each target is `module:function` taking `argv` (the arguments after the name).

Start-up noise is kept off the terminal unless `--verbose` is given (anywhere on the line): the log lines
TensorFlow, XLA and CUDA's probing print through absl before anything can configure them (`I0000 …`,
`WARNING: All log messages before absl::InitializeLog() …`), which no environment variable turns off, are
dropped from this process's stderr (file descriptor 2, so Beam's worker processes are covered too) by
`START_UP_NOISE`; other libraries' Python logs show from WARNING up, the project's own from INFO.

`STEPS` are two-word commands (`posters index publish …`): the steps a scheduler runs between Dataflow jobs.

The commands in `CONFIG_FIRST` import TensorFlow (seconds); the CLI loads their `--config` and `--set` first
(`check_config_first`), so a bad override is one line and exit code in a fraction of a second, the command's own
(each command still loads the config itself and reports the same line; tests/pipelines/test_cli.py checks the two
agree). A command line with both a bad config and missing flags thus reports the config first.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import select
import sys
import threading
from collections.abc import Iterator

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

# Commands whose flags are `command_parser`'s and whose module imports TensorFlow: the exit code each gives for a
# `ConfigError` (printed as `posters NAME: <error>`), which `check_config_first` gives before importing it.
CONFIG_FIRST = {"preprocess": 1, "train": 1, "export-model": 2, "embed": 1}

VERBOSE_FLAG = "--verbose"
# Whole stderr lines dropped without --verbose: C++ INFO/WARNING lines in absl's format, GPU probing on a machine
# without a usable GPU, the CPU-instructions notice, and two library warnings that say nothing about the run.
START_UP_NOISE = re.compile(rb"""(?x) ^ (?:
    WARNING:\ All\ log\ messages\ before\ absl::InitializeLog\(\)
  | [IW]\d{4}\ \d\d:\d\d:\d+\.\d+ \s+ \d+\ [\w.-]+:\d+\]
  | E\d{4}\ \d\d:\d\d:\d+\.\d+ \s+ \d+\ cuda_\w+\.cc:\d+\]
  | To\ enable\ the\ following\ instructions:\ .*\ rebuild\ TensorFlow
  | (?:WARNING:\w+:)? Resource\ module\ is\ not\ available\ for\ current\ platform
  | (?:WARNING:absl:)? You\ are\ passing\ instance\ dicts\ and\ DatasetMetadata\ to\ TFT
)""")
_PARTIAL_LINE_WAIT_S = 0.1  # a line without its end yet (a `\r` progress line) is shown after this long


def usage() -> str:
    width = max(map(len, [*SUBCOMMANDS, *STEPS]))
    lines = [f"usage: posters [{VERBOSE_FLAG}] COMMAND [--help] [ARGS...]", "",
             f"  {VERBOSE_FLAG}  also show TensorFlow's, CUDA's and Beam's start-up and INFO logs", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "steps between Dataflow jobs (the Composer DAG's):"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in STEPS.items()]
    return "\n".join(lines)


def configure_logging(verbose: bool) -> None:
    """Python logging for a command: everything from INFO with `--verbose`; else the project's own INFO lines and
    other libraries' warnings. Sets TensorFlow's C++ log level for what it logs after start-up."""
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for ours in ("pipelines", "trainer"):
        logging.getLogger(ours).setLevel(logging.INFO)


def _copy_filtered(source: int, target: int) -> None:
    """Copies `source` to `target` until end of file, dropping whole lines that match `START_UP_NOISE`."""
    pending, showing = b"", False  # showing: the start of the pending line was already written
    while True:
        ready = select.select([source], [], [], _PARTIAL_LINE_WAIT_S)[0]
        chunk = os.read(source, 65536) if ready else None
        if chunk == b"":
            break
        if chunk is None:  # nothing for a while: show what there is of the line
            if pending:
                os.write(target, pending)
                pending, showing = b"", True
            continue
        pending += chunk
        for line in re.findall(rb"[^\r\n]*(?:\r\n|\r|\n)", pending):
            if showing or not START_UP_NOISE.match(line):
                os.write(target, line)
            showing = False
            pending = pending[len(line):]
    if pending and (showing or not START_UP_NOISE.match(pending)):
        os.write(target, pending)


@contextlib.contextmanager
def start_up_noise_filtered() -> Iterator[None]:
    """Inside: file descriptor 2 (this process's stderr and its children's) goes through `_copy_filtered`."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    copier = threading.Thread(target=_copy_filtered, args=(read_end, original), daemon=True)
    copier.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end in this process: the copier reaches its end
        copier.join(timeout=5)
        os.close(read_end)
        os.close(original)


class _NotChecked(Exception):
    """The command line is left to the command's own parser (a flag without its value, …)."""


def _not_checked(message: str):
    raise _NotChecked(message)


def check_config_first(argv: list[str]) -> int | None:
    """For a `CONFIG_FIRST` command: loads the config its `--config` and `--set` name (as `parse_command` does)
    without importing the command; on a `ConfigError` prints the command's line and returns its exit code. None:
    go on to the command (the config is valid, the command is not one of them, or the line is one the command's
    full parser may read otherwise: `--help`, `--`, an abbreviation such as `--conf`, a flag without its value)."""
    found = command_target(argv)
    name = argv[0]
    if found is None or name not in CONFIG_FIRST or " ".join(argv[:2]) in STEPS:
        return None
    rest = found[1]
    for arg in rest:
        flag = arg.partition("=")[0]
        if arg in ("-h", "--", "--help") or (len(flag) > 2 and any(full.startswith(flag) and full != flag
                                                                   for full in ("--help", "--config", "--set"))):
            return None
    from pipelines.common.command_line import command_parser  # argparse, pydantic and YAML: milliseconds
    from pipelines.config import ConfigError, load_config

    parser = command_parser(name, "")
    parser.allow_abbrev, parser.error = False, _not_checked
    try:
        args, _ = parser.parse_known_args(rest)
        load_config(args.config, args.overrides)
    except _NotChecked:
        return None
    except ConfigError as err:
        print(f"posters {name}: {err}", file=sys.stderr)
        return CONFIG_FIRST[name]
    return None


def command_target(argv: list[str]) -> tuple[str, list[str]] | None:
    """("module:function", its arguments) for a command line, or None when it names no command."""
    two = " ".join(argv[:2])
    if two in STEPS:
        return STEPS[two][0], argv[2:]
    if argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]][0], argv[1:]
    return None


def command_for(argv: list[str]):
    """(the function, its arguments) for a command line, or None when it names no command (imports its module)."""
    found = command_target(argv)
    if found is None:
        return None
    target, rest = found
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function), rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in argv
    argv = [arg for arg in argv if arg != VERBOSE_FLAG]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if command_target(argv) is None:
        print(f"posters: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    config_error = check_config_first(argv)
    if config_error is not None:
        return config_error
    configure_logging(verbose)
    with contextlib.nullcontext() if verbose else start_up_noise_filtered():  # the import prints the noise
        command, rest = command_for(argv)
        return command(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
