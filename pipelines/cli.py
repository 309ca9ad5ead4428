"""`posters`: the one console entry point. Each subcommand lives in its own module and parses its own flags.

Subcommands are imported lazily, so `posters --help` is instant and a command only loads what it uses
(TensorFlow, Beam, faiss). Each target is `module:function` taking `argv` (the arguments after the name).

Start-up noise is kept off the terminal unless `--verbose` is given (anywhere on the line): the log lines
TensorFlow, XLA and CUDA's probing print through absl before anything can configure them (`I0000 …`,
`WARNING: All log messages before absl::InitializeLog() …`), which no environment variable turns off, are
dropped from this process's stderr (file descriptor 2, so Beam's worker processes are covered too) by
`START_UP_NOISE`; other libraries' Python logs show from WARNING up, the project's own from INFO.
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
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: posters [{VERBOSE_FLAG}] COMMAND [--help] [ARGS...]", "",
             f"  {VERBOSE_FLAG}  also show TensorFlow's, CUDA's and Beam's start-up and INFO logs", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in argv
    argv = [arg for arg in argv if arg != VERBOSE_FLAG]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"posters: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    configure_logging(verbose)
    with contextlib.nullcontext() if verbose else start_up_noise_filtered():
        module_name, _, function = SUBCOMMANDS[name][0].partition(":")
        command = getattr(importlib.import_module(module_name), function)
        return command(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
