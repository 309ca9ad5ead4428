"""The nightly tests' inputs: a tiny catalog, watch history and model, built once per test module."""
import pytest

from pipelines.synthetic.catalog import generate_catalog
from pipelines.synthetic.watch_history import generate_watch_history
from tests.pipelines.embed.tiny_model import export_tiny_model

N_TITLES = 16


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nightly_inputs")
    generate_catalog(root / "catalog", n=N_TITLES, seed=2, width=64, height=96)
    catalog = str(root / "catalog" / "catalog.csv")
    history = str(root / "history.csv")
    generate_watch_history(catalog, history, n_users=12, seed=2)
    model = str(root / "model")
    export_tiny_model(model, input_size=32, dim=16, seed=0)
    return {"root": root, "catalog": catalog, "history": history, "model": model}
