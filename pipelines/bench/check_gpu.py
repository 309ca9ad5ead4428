"""A tiny Beam job that fails unless TensorFlow on the workers sees a GPU (`make dataflow-check-gpu`).

    posters bench check-gpu --config configs/dataflow.yaml --sdk_container_image=IMAGE [beam options]
    posters bench check-gpu --expect-cpu     # DirectRunner on a machine without a GPU: must pass

Plain `tensorflow` on a GPU worker falls back to the CPU without a word, and `install-nvidia-driver` brings only
the driver: this job is how to find out, in minutes, whether the worker image's CUDA TensorFlow finds the GPU.
The check step carries Beam's accelerator resource hint, so Dataflow gives exactly that step a GPU worker. Each
worker's report (host, TensorFlow version and CUDA build, the GPUs it sees) is logged and, with `--out`, written
as JSON lines.
"""
from __future__ import annotations

import json
import logging
import socket
import sys

import apache_beam as beam

from pipelines.common.command_line import command_parser, make_pipeline, parse_command

log = logging.getLogger(__name__)

DEFAULT_ACCELERATOR = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"


class NoGpuVisible(RuntimeError):
    """TensorFlow on a worker that should have a GPU lists none."""


def device_report() -> dict:
    """What TensorFlow in this process sees: host, version, the CUDA/cuDNN it was built with, GPU devices."""
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    return {"host": socket.gethostname(), "tensorflow": tf.__version__,
            "built_with_cuda": bool(build.get("is_cuda_build")), "cuda_version": build.get("cuda_version"),
            "cudnn_version": build.get("cudnn_version"),
            "gpus": [device.name for device in tf.config.list_physical_devices("GPU")]}


def gpu_problem(report: dict) -> str:
    """Why a worker with no visible GPU has none, in words that say what to change."""
    if not report["built_with_cuda"]:
        cause = (f"TensorFlow {report['tensorflow']} in the worker image was built without CUDA: build the image "
                 "from the top-level Dockerfile (tensorflow[and-cuda]) and pass it as --sdk_container_image")
    else:
        cause = (f"TensorFlow {report['tensorflow']} (CUDA {report['cuda_version']}) found no GPU device: check "
                 "that the job asked for an accelerator (worker_accelerator service option or this step's "
                 "resource hint) with install-nvidia-driver, and the worker logs for CUDA load errors")
    return (f"no GPU visible to TensorFlow on {report['host']} (tf.config.list_physical_devices('GPU') is empty): "
            f"{cause}")


class RequireGpu(beam.DoFn):
    """Yields this worker's device report; raises `NoGpuVisible` when it lists no GPU (unless `expect_gpu` is
    False, for a CPU-only run that proves the pipeline itself works)."""

    def __init__(self, expect_gpu: bool = True):
        super().__init__()
        self.expect_gpu = expect_gpu

    def process(self, probe: int):
        report = {"probe": probe, **device_report()}
        if self.expect_gpu and not report["gpus"]:
            raise NoGpuVisible(gpu_problem(report))
        log.info("device report: %s", report)
        yield report


class CheckGpu(beam.PTransform):
    """`probes` elements, spread over workers, each checked on a GPU-hinted step; outputs the device reports."""

    def __init__(self, probes: int = 4, expect_gpu: bool = True, accelerator: str = DEFAULT_ACCELERATOR):
        super().__init__()
        self.probes, self.expect_gpu, self.accelerator = probes, expect_gpu, accelerator

    def expand(self, pipeline):
        return (pipeline
                | "Probes" >> beam.Create(list(range(self.probes)))
                | "SpreadOverWorkers" >> beam.Reshuffle()
                | "RequireGpu" >> beam.ParDo(RequireGpu(self.expect_gpu)).with_resource_hints(
                    accelerator=self.accelerator))


def run(argv: list[str] | None = None, save_main_session: bool = True, test_pipeline=None) -> None:
    """Runs the check; raises (the pipeline fails) when a worker sees no GPU and `--expect-cpu` is not given."""
    parser = command_parser("check-gpu", __doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=4, help="elements to check (default: %(default)s)")
    parser.add_argument("--accelerator", default=DEFAULT_ACCELERATOR,
                        help="the check step's accelerator resource hint (default: %(default)s)")
    parser.add_argument("--expect-cpu", action="store_true",
                        help="the workers have no GPU: report the devices instead of failing (proves the job runs)")
    parser.add_argument("--out", help="write each worker's device report here as JSON lines (local or gs://)")
    args, config, beam_args = parse_command(parser, sys.argv[1:] if argv is None else argv)
    pipeline = make_pipeline(config, beam_args, save_main_session, test_pipeline)
    reports = pipeline | "CheckGpu" >> CheckGpu(args.probes, not args.expect_cpu, args.accelerator)
    if args.out:
        _ = (reports | "ToJson" >> beam.Map(json.dumps, sort_keys=True)
             | "WriteReports" >> beam.io.WriteToText(args.out, shard_name_template="", num_shards=1))
    pipeline.run().wait_until_finish()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run(argv)
    print("check-gpu: every probe ran " + ("(no GPU required: --expect-cpu)" if "--expect-cpu" in argv
                                           else "and saw a GPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
