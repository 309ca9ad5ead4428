"""`posters bench check-gpu` on DirectRunner: with no GPU here it must fail and say why; with --expect-cpu the same
pipeline runs to the end; the check step carries the accelerator resource hint Dataflow schedules GPUs by."""
import json

import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class

from pipelines.bench import check_gpu
from pipelines.bench.cli import main as bench_main


def test_without_a_gpu_the_job_fails_and_says_tensorflow_sees_none():
    with pytest.raises(Exception, match=r"no GPU visible to TensorFlow .*list_physical_devices\('GPU'\) is empty"):
        check_gpu.run(["--probes", "2"], save_main_session=False, test_pipeline=BeamTestPipeline())


def test_with_expect_cpu_the_same_pipeline_runs_and_reports_each_probe(tmp_path):
    out = tmp_path / "reports.jsonl"
    assert bench_main(["check-gpu", "--expect-cpu", "--probes", "3", "--out", str(out)]) == 0
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(report["probe"] for report in reports) == [0, 1, 2]
    assert all(report["gpus"] == [] and report["tensorflow"] for report in reports)


def test_the_message_names_the_fix_for_a_tensorflow_built_without_cuda():
    report = {"host": "w-1", "tensorflow": "2.21.0", "built_with_cuda": False, "cuda_version": None, "gpus": []}
    message = check_gpu.gpu_problem(report)
    assert "tensorflow[and-cuda]" in message and "--sdk_container_image" in message
    report.update(built_with_cuda=True, cuda_version="12.5")
    assert "install-nvidia-driver" in check_gpu.gpu_problem(report)


def test_the_check_step_carries_the_accelerator_resource_hint():
    pipeline = BeamTestPipeline()
    _ = pipeline | "CheckGpu" >> check_gpu.CheckGpu(accelerator="type:nvidia-l4;count:1;install-nvidia-driver")
    proto = pipeline.to_runner_api()
    hints = {transform.unique_name: dict(transform.environment_id and
                                         proto.components.environments[transform.environment_id].resource_hints
                                         or {})
             for transform in proto.components.transforms.values()}
    require_gpu = [name for name in hints if name.endswith("RequireGpu")]
    assert require_gpu, sorted(hints)
    assert hints[require_gpu[0]] == {"beam:resources:accelerator:v1": b"type:nvidia-l4;count:1;install-nvidia-driver"}
    assert not any(hints[name] for name in hints if name.endswith("Probes"))
