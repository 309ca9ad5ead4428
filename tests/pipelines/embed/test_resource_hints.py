"""Only the inference step asks for the accelerator: with `embed.accelerator` set, the embed pipeline's graph (its
runner API proto) carries Beam's accelerator resource hint in the environment of the RunInference step's
transforms and of no other; without it, no transform carries one. The graph is built, not run (no GPU here)."""
import json

import apache_beam as beam
import pytest
from apache_beam.portability import common_urns

from pipelines.config import Config
from pipelines.embed.pipeline import build_pipeline
from pipelines.synthetic.catalog import generate_catalog

ACCELERATOR = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
HINT_URN = common_urns.resource_hints.ACCELERATOR.urn


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A catalog and a model directory with only its `model_meta.json` (all the graph needs to be built)."""
    root = tmp_path_factory.mktemp("hints")
    generate_catalog(root / "catalog", n=3, seed=0, width=64, height=96)
    (root / "model").mkdir()
    (root / "model" / "model_meta.json").write_text(json.dumps({"model_version": "m1", "dim": 8, "input_size": 32}))
    return str(root / "catalog" / "catalog.csv"), str(root / "model"), str(root / "out")


def accelerator_by_transform(config: Config, inputs) -> dict[str, bytes]:
    """unique name → the accelerator hint of its environment, for every leaf transform of the built graph."""
    pipeline = beam.Pipeline()
    catalog, model, out = inputs
    build_pipeline(pipeline, catalog, model, out, config, None)
    proto = pipeline.to_runner_api()
    environments = proto.components.environments
    return {transform.unique_name: environments[transform.environment_id].resource_hints.get(HINT_URN)
            for transform in proto.components.transforms.values()
            if not transform.subtransforms and transform.environment_id}


def test_the_accelerator_hint_is_on_the_inference_step_only(inputs):
    hints = accelerator_by_transform(Config.model_validate({"embed": {"accelerator": ACCELERATOR}}), inputs)
    hinted = {name for name, hint in hints.items() if hint}
    assert hinted and all(name.startswith("EmbedPosters/RunInference/") for name in hinted), hinted
    assert {hints[name] for name in hinted} == {ACCELERATOR.encode("ascii")}
    assert any(name.startswith("ReadCatalog") for name in hints) and any(
        name.startswith("ReadAndValidatePosters") for name in hints)  # the CPU steps are in the graph, unhinted
    assert not any(hint for name, hint in hints.items() if not name.startswith("EmbedPosters/RunInference/"))


def test_without_an_accelerator_no_step_asks_for_one(inputs):
    assert not any(accelerator_by_transform(Config(), inputs).values())


def test_the_dataflow_config_asks_for_the_gpu_by_hint_and_not_job_wide():
    from pipelines.config import load_config

    config = load_config("configs/dataflow.yaml")
    assert config.embed.accelerator == ACCELERATOR and config.embed.share_model_across_processes
    job_wide = " ".join(config.nightly.embed_beam_args + [str(value) for value in config.beam.values()])
    assert "worker_accelerator" not in job_wide  # right fitting must not be combined with it
