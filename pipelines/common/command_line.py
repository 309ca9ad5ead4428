"""Flags every subcommand shares (`--config`, `--set key.path=value`; unknown flags go to Beam untouched) and the
one way a stage makes its Beam pipeline from them."""
from __future__ import annotations

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipelines.config import Config, load_config


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
    config's and the command line's Beam options (`save_main_session` as in Beam's examples)."""
    if test_pipeline is not None:
        return test_pipeline
    options = PipelineOptions(beam_argv(config, beam_args))
    options.view_as(SetupOptions).save_main_session = save_main_session
    return beam.Pipeline(options=options)
