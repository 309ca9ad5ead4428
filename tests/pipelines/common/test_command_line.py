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


# --- the local runner never reaches for the network -------------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _blocked_network(monkeypatch) -> list[str]:
    """Refuses every name lookup and connection off this machine, recording the host asked for."""
    import socket

    attempts, real_lookup, real_connect = [], socket.getaddrinfo, socket.socket.connect

    def lookup(host, *args, **kwargs):
        if host not in _LOOPBACK:
            attempts.append(host)
            raise OSError(f"network blocked by the test: {host}")
        return real_lookup(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in _LOOPBACK:
            attempts.append(address[0])
            raise OSError(f"network blocked by the test: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def _count_into(pipeline, path) -> None:
    import apache_beam as beam

    with pipeline as p:
        _ = (p | beam.Create(["a", "b", "a"]) | beam.combiners.Count.PerElement()
             | beam.MapTuple(lambda key, n: f"{key}={n}") | beam.io.WriteToText(str(path), shard_name_template=""))


def test_direct_runner_runs_on_the_python_runner_without_the_network(monkeypatch, tmp_path):
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from pipelines.common.command_line import make_pipeline

    attempts = _blocked_network(monkeypatch)
    config = parse_command(command_parser("x", "t"), [])[1]
    assert config.beam["runner"] == "DirectRunner"
    pipeline = make_pipeline(config, [], save_main_session=False)
    assert isinstance(pipeline.runner, FnApiRunner)
    _count_into(pipeline, tmp_path / "counts.txt")
    assert sorted((tmp_path / "counts.txt").read_text().split()) == ["a=2", "b=1"]
    assert attempts == []


def test_beams_own_direct_runner_would_fetch_prism(monkeypatch, tmp_path):
    """Why make_pipeline names the runner: Beam's DirectRunner first tries to download Prism (from github.com)."""
    import apache_beam as beam

    attempts = _blocked_network(monkeypatch)
    _count_into(beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])), tmp_path / "counts.txt")
    assert any("github" in host for host in attempts)


def test_other_runners_are_left_to_beam():
    from pipelines.common.command_line import local_runner

    assert local_runner(PipelineOptions(["--runner=DataflowRunner"])) is None
    assert local_runner(PipelineOptions(["--runner=direct"])) is not None


# --- the data plane: a write made while a flush is in flight must reach the worker ---------------------------------
def _delivered_when_a_write_lands_during_a_flush(limit_ms: int) -> bytes:
    """What a runner data stream built with `limit_ms` sends when the writer adds bytes while a flush is in the send
    callback (the runner's callback blocks there whenever its send queue is full, e.g. behind a slow worker)."""
    import threading

    from apache_beam.runners.worker.data_plane import ClosableOutputStream

    sent, in_flush, release = [], threading.Event(), threading.Event()

    def send(data):
        sent.append(data)
        in_flush.set()
        release.wait(5)

    stream = ClosableOutputStream.create(sent.append, send, limit_ms)
    stream.write(b"a" * 10)
    if limit_ms:
        assert in_flush.wait(5), "the timed flush never ran"
    stream.write(b"b" * 10)  # the writer goes on while the flush waits for the queue
    release.set()
    stream.close()
    return b"".join(sent)


def test_beams_timed_data_flush_drops_a_write_made_during_a_flush():
    """Why local_runner turns the timed flush off: Beam 2.77's time-based stream clears its buffer after the send
    callback returns, erasing what was written meanwhile (whole elements: data lost without an error)."""
    assert _delivered_when_a_write_lands_during_a_flush(20) == b"a" * 10


def test_direct_runner_data_streams_deliver_every_write(monkeypatch):
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from pipelines.common.command_line import local_runner

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)  # Beam's default; restored afterwards
    local_runner(PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing"]))
    # what Beam's gRPC server (multi_processing, multi_threading) and in-process workers build their streams with
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0
    delivered = _delivered_when_a_write_lands_during_a_flush(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
    assert delivered == b"a" * 10 + b"b" * 10


def _see(element, total):
    from apache_beam.metrics import Metrics

    Metrics.counter("test", "seen").inc()
    return len(element[2])


def loaded_run() -> None:
    """A small two-worker run on a 'loaded machine' (run by the test below in a child process): every data-stream
    write waits 20 ms (the writing thread off the CPU) and Beam's timed flush is at 20 ms instead of 1000 (so this
    takes seconds, not minutes). Prints how many of its 32 elements the last step saw."""
    import time

    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker import data_plane

    from pipelines.common.command_line import make_pipeline

    write = data_plane.OutputStream.write

    def slow_write(stream, data, nested=False):
        time.sleep(0.02)
        return write(stream, data, nested)

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 20
    data_plane.SizeBasedBufferingClosableOutputStream.write = slow_write
    config = parse_command(command_parser("x", "t"), [])[1]
    pipeline = make_pipeline(config, ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
                             save_main_session=False)
    # 32 elements of 1 MB; the count as a side input makes the runner hold them and send them on in several writes
    elements = (pipeline | beam.Create(range(4))
                | beam.FlatMap(lambda seed: ((seed, i, b"x" * (1 << 20)) for i in range(8))))
    total = elements | beam.combiners.Count.Globally()
    _ = elements | beam.Map(_see, beam.pvalue.AsSingleton(total))
    result = pipeline.run()
    result.wait_until_finish()
    seen = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    print("seen", sum(counter.committed for counter in seen))


def test_a_loaded_direct_runner_loses_no_element():
    """With Beam's timed flush on, `loaded_run` lost elements or tore them: `Invalid PaneInfoEncoding`, or a torn
    length read as gigabytes (hence a child process with a 4 GiB address-space limit and a time limit)."""
    import resource
    import subprocess
    import sys

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    child = subprocess.run([sys.executable, "-c", f"from {__name__} import loaded_run; loaded_run()"],
                           capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split()[-2:] == ["seen", "32"]
