"""Flags every subcommand shares (`--config`, `--set key.path=value`; unknown flags go to Beam untouched) and the
one way a stage makes its Beam pipeline from them.

Beam is imported where a pipeline is made, not here: parsing flags and loading the config (`posters` checks a
command's config before importing the command: pipelines/cli.py) takes milliseconds."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pipelines.config import Config, load_config

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineRunner


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"posters {prog}", description=description)
    parser.add_argument("--config", default="local.yaml",
                        help="YAML config (default: %(default)s, the packaged one unless the current directory has it)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one config key, e.g. --set train.metric_epochs=5 (repeatable)")
    return parser


def parse_command(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, Config, list[str]]:
    """Parses our flags, loads the config, and returns the remaining flags (Beam pipeline options)."""
    args, beam_args = parser.parse_known_args(argv)
    config = load_config(args.config, args.overrides)
    return args, config, beam_args


def beam_argv(config: Config, beam_args: list[str]) -> list[str]:
    """Beam flags from the config's `beam:` section first, then the command line's (which win)."""
    flags = []
    for name, value in config.beam.items():
        if isinstance(value, bool):
            if value:
                flags.append(f"--{name}")
        elif isinstance(value, list):  # repeatable flags: --experiments=a --experiments=b
            flags.extend(f"--{name}={item}" for item in value)
        else:
            flags.append(f"--{name}={value}")
    return flags + list(beam_args)


def make_pipeline(config: Config, beam_args: list[str], save_main_session: bool = True,
                  test_pipeline: beam.Pipeline | None = None) -> beam.Pipeline:
    """The pipeline a stage's `run` builds on: `test_pipeline` when a test passes one, else a new one with the
    config's and the command line's Beam options (`save_main_session` as in Beam's examples); its runs are
    measured per phase when `phase_memory.ENV` is set (`posters bench scale`)."""
    if test_pipeline is not None:
        return test_pipeline
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    from pipelines.common import phase_memory

    options = PipelineOptions(beam_argv(config, beam_args))
    options.view_as(SetupOptions).save_main_session = save_main_session
    return phase_memory.watch_runs(beam.Pipeline(runner=local_runner(options), options=options))


# What Beam's `runner` option accepts for its direct runner (case-insensitive; Beam adds a missing "Runner").
_DIRECT_RUNNER_NAMES = {None, "direct", "directrunner", "switchingdirectrunner"}


def local_runner(options: PipelineOptions) -> PipelineRunner | None:
    """For `runner: DirectRunner` (or no runner): Beam's Python direct runner (`FnApiRunner`, with the pipeline
    options passed to its workers as Beam's DirectRunner does). Beam 2.77's DirectRunner first tries the Prism
    runner, which downloads its binary from GitHub (on a firewalled network that can hang) before falling back to
    this same runner; naming it here never reaches for the network. Any other runner: None (Beam's own choice)."""
    from apache_beam.options.pipeline_options import StandardOptions

    name = options.view_as(StandardOptions).runner
    if (name.lower() if isinstance(name, str) else name) not in _DIRECT_RUNNER_NAMES:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    without_timed_data_flush()
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)


def without_timed_data_flush() -> None:
    """Turns off the Python runner's time-based flush of its gRPC data streams (Beam 2.77 flushes each stream from
    a timer thread every `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS`, 1000 ms), leaving the size-based flush.

    That flush loses and tears data: `TimeBasedBufferingClosableOutputStream.flush` takes the buffer, hands it to
    the send queue (which blocks while the queue is full) and only then clears the buffer, and writes do not take
    its lock, so whatever the writing thread adds meanwhile is dropped (`docs/scaling.md`, "DirectRunner's data
    plane"). In `multi_processing` and `multi_threading` mode the runner sends every bundle's input through such a
    stream, so whole elements vanished without an error; in `multi_threading` the in-process workers also write
    their outputs through one, and a flush in the middle of an element tore it (`Unknown type tag`, `Invalid
    PaneInfoEncoding`, a `None` row). Beam reads the value when a runner starts its gRPC server and its in-process
    workers, after this; `in_memory` mode has no gRPC data plane. Dataflow's workers are not touched."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0  # 0: `ClosableOutputStream.create` buffers by size only
