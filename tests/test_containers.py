"""The images and the Makefile's Dataflow targets, checked against what is installed here: the worker image
(top-level Dockerfile) is Beam's SDK image for this Beam release with CUDA TensorFlow for this TensorFlow
release, faiss and the package preinstalled; the launcher image (flex_template/Dockerfile) is built on it; every
Dataflow target hands workers that image instead of staging the package with --setup_file."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import apache_beam
import faiss
import pytest
import tensorflow as tf
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()
LAUNCHER_DOCKERFILE = (REPO / "flex_template" / "Dockerfile").read_text()
MAKEFILE = (REPO / "Makefile").read_text()
DATAFLOW_TARGETS = sorted(re.findall(r"^(dataflow-[a-z0-9-]+):", MAKEFILE, flags=re.MULTILINE))


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def pip_requirements(dockerfile: str) -> list[str]:
    """Every requirement named by a `pip install` in a RUN instruction."""
    found = []
    for instruction, arguments in instructions(dockerfile):
        for command in arguments.split("&&") if instruction == "RUN" else []:
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"]:
                found += [word for word in words if not word.startswith("-") and word not in ("pip", "install")]
    return found


def test_the_worker_image_is_beams_sdk_image_for_the_installed_beam_and_python():
    froms = [arguments for instruction, arguments in instructions(DOCKERFILE) if instruction == "FROM"]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert froms == [f"apache/beam_python{python}_sdk:{apache_beam.__version__}"]


def test_the_worker_image_has_cuda_tensorflow_of_the_installed_release():
    major_minor = ".".join(tf.__version__.split(".")[:2])
    assert f"tensorflow[and-cuda]=={major_minor}.*" in pip_requirements(DOCKERFILE)
    assert not [r for r in pip_requirements(DOCKERFILE) if re.match(r"tensorflow(==|>|<|$)", r)]  # no plain TF


def test_the_worker_image_preinstalls_faiss_and_the_package():
    requirements = pip_requirements(DOCKERFILE)
    assert f"faiss-cpu=={faiss.__version__}" in requirements
    assert "." in requirements  # the package itself, from the copied source
    copied = {arguments.split()[0] for instruction, arguments in instructions(DOCKERFILE) if instruction == "COPY"}
    assert {"pipelines", "trainer", "configs", "setup.py", "flex_template"} <= copied


def test_workers_install_nothing_at_start_up():
    names = [instruction for instruction, _ in instructions(DOCKERFILE)]
    assert "ENTRYPOINT" not in names and "CMD" not in names  # Beam's /opt/apache/beam/boot stays the entry point
    beam = yaml.safe_load((REPO / "configs" / "dataflow.yaml").read_text())["beam"]
    assert not {"setup_file", "requirements_file", "extra_packages", "extra_package"} & set(beam)


def test_the_launcher_image_is_the_worker_image_plus_googles_launcher():
    steps = instructions(LAUNCHER_DOCKERFILE)
    froms = [arguments for instruction, arguments in steps if instruction == "FROM"]
    assert froms[-1] == "${WORKER_IMAGE}" and "python311-template-launcher-base" in froms[0]
    env = " ".join(arguments for instruction, arguments in steps if instruction == "ENV")
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/posters/flex_template/launch.py" in env
    assert "SETUP_FILE" not in env and "REQUIREMENTS_FILE" not in env  # nothing staged for the workers
    assert "WORKDIR /opt/posters" in DOCKERFILE.replace("\t", " ")


def make_dry_run(target: str) -> str:
    result = subprocess.run(["make", "-n", target, "BUCKET=gs://b/posters", "WORKER_IMAGE=registry/worker:v1"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_there_are_dataflow_targets_to_check():
    assert {"dataflow-preprocess", "dataflow-embed", "dataflow-index", "dataflow-candidates", "dataflow-nightly",
            "dataflow-check-gpu"} <= set(DATAFLOW_TARGETS)


@pytest.mark.parametrize("target", DATAFLOW_TARGETS)
def test_every_dataflow_target_passes_the_worker_image_and_no_setup_file(target):
    commands = [line for line in make_dry_run(target).splitlines() if "posters " in line]
    assert commands, f"make -n {target} runs no posters command"
    assert all("--sdk_container_image=registry/worker:v1" in line for line in commands)
    assert "--setup_file" not in make_dry_run(target)


def test_the_gpu_check_runs_the_check_gpu_job_with_a_gpu():
    command = make_dry_run("dataflow-check-gpu")
    assert "posters bench check-gpu" in command and "worker_accelerator=type:nvidia-tesla-t4" in command
    assert "--expect-cpu" not in command


def test_make_flex_templates_builds_one_spec_per_stage_from_its_metadata():
    """Runs the target with tests/fake_bin/gcloud first on PATH: it prints each gcloud command instead."""
    commands = subprocess.run(["make", "flex-templates", "BUCKET=gs://b/posters", "WORKER_IMAGE=registry/worker:v1"],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{REPO / 'tests' / 'fake_bin'}:{os.environ['PATH']}"})
    assert commands.returncode == 0, commands.stderr
    builds = [line for line in commands.stdout.splitlines() if line.startswith("gcloud dataflow flex-template build")]
    stages = ["preprocess", "embed", "index", "candidates"]
    assert len(builds) == len(stages)
    for stage, build in zip(stages, builds):
        assert f"gs://b/posters/templates/{stage}.json" in build
        assert f"--metadata-file flex_template/{stage}_metadata.json" in build
        assert "--env FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/posters/flex_template/launch.py" in build
        assert f"--env POSTERS_STAGE={stage}" in build and "--env POSTERS_WORKER_IMAGE=registry/worker:v1" in build
        assert (REPO / "flex_template" / f"{stage}_metadata.json").exists()
    assert "gcloud builds submit --config flex_template/cloudbuild.yaml" in commands.stdout
