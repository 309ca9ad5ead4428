"""Beam flags pass through untouched: the config's `beam:` section first, the command line's last (and winning)."""
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from pipelines.common.command_line import beam_argv, command_parser, parse_command


def test_dataflow_config_becomes_dataflow_pipeline_options():
    parser = command_parser("preprocess", "test")
    parser.add_argument("--catalog")
    args, config, beam_args = parse_command(parser, [
        "--config", "configs/dataflow.yaml", "--catalog", "gs://b/catalog.csv",
        "--project=my-project", "--region", "europe-west4", "--max_num_workers=5"])
    assert args.catalog == "gs://b/catalog.csv"
    options = PipelineOptions(beam_argv(config, beam_args))
    cloud = options.view_as(GoogleCloudOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (cloud.project, cloud.region) == ("my-project", "europe-west4")  # the command line wins
    assert cloud.temp_location == config.beam["temp_location"]
    assert options.view_as(SetupOptions).setup_file is None  # workers run the worker image: nothing to stage
    assert options.view_as(WorkerOptions).max_num_workers == 5
    assert options.view_as(WorkerOptions).machine_type == config.beam["machine_type"]


def test_boolean_beam_settings_become_bare_flags():
    config = parse_command(command_parser("x", "t"), ["--set", "beam.save_main_session=true"])[1]
    assert "--save_main_session" in beam_argv(config, [])
    assert PipelineOptions(beam_argv(config, [])).view_as(SetupOptions).save_main_session is True


def test_list_beam_settings_repeat_the_flag():
    flags = ["--set", "beam.experiments=[use_runner_v2, no_use_multiple_sdk_containers]"]
    config = parse_command(command_parser("x", "t"), flags)[1]
    options = PipelineOptions(beam_argv(config, []))
    from apache_beam.options.pipeline_options import DebugOptions
    assert options.view_as(DebugOptions).experiments == ["use_runner_v2", "no_use_multiple_sdk_containers"]
