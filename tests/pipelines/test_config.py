"""The one config loader: typed values, named errors, overrides, and the shipped configs all load."""
import pytest

from pipelines.config import Config, ConfigError, load_config, packaged_config_path


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["local.yaml", "nasnet_large.yaml", "dataflow.yaml"])
def test_shipped_configs_load(name):
    config = load_config(packaged_config_path(name))
    assert isinstance(config, Config)


def test_seed_model_settings():
    config = load_config(packaged_config_path("nasnet_large.yaml"))
    assert (config.model.backbone, config.model.input_size, config.model.weights) == ("nasnet_large", 331, "imagenet")
    assert (config.model.embedding_dim, config.train.triplet_distance, config.train.triplet_margin) == (128, "angular", 0.1)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key train\.epochz"):
        load_config(path)


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key trainer"):
        load_config(write(tmp_path, "trainer: {}\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.metric_epochs must be int, got 'three'"):
        load_config(write(tmp_path, "train:\n  metric_epochs: three\n"))


def test_bad_choice_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.triplet_distance is 'cosine'; choose one of L2, angular, squared-L2"):
        load_config(write(tmp_path, "train:\n  triplet_distance: cosine\n"))


def test_fraction_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match=r"preprocess\.max_reject_fraction must be between 0 and 1"):
        load_config(write(tmp_path, "preprocess:\n  max_reject_fraction: 1.5\n"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "train: [unclosed\n"))


def test_overrides_apply_with_yaml_types(tmp_path):
    config = load_config(write(tmp_path, "train:\n  metric_epochs: 3\n"),
                         ["train.metric_epochs=7", "index.factory=IVF64,Flat", "train.unfreeze_schedule=[[a],[b]]"])
    assert config.train.metric_epochs == 7
    assert config.index.factory == "IVF64,Flat"
    assert config.train.unfreeze_schedule == [["a"], ["b"]]


def test_override_of_unknown_key_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"--set model\.depth=3: unknown key model\.depth"):
        load_config(write(tmp_path, "train:\n  metric_epochs: 3\n"), ["model.depth=3"])


def test_override_without_equals_fails():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["model.backbone"])


def test_int_accepted_for_float(tmp_path):
    config = load_config(write(tmp_path, "train:\n  triplet_margin: 1\n"))
    assert config.train.triplet_margin == 1.0 and isinstance(config.train.triplet_margin, float)


def test_bare_name_finds_the_packaged_config():
    assert load_config("dataflow.yaml").beam["runner"] == "DataflowRunner"


def test_override_fills_a_section_left_empty_in_the_file(tmp_path):
    assert load_config(write(tmp_path, "train:\n"), ["train.metric_epochs=2"]).train.metric_epochs == 2


@pytest.mark.parametrize("key", ["train.per_replica_batch_size", "train.examples_per_class", "index.nprobe"])
def test_sizes_that_must_be_positive_are_checked_when_loading(key):
    with pytest.raises(ConfigError, match=rf"{key} must be positive, got 0"):
        load_config(None, [f"{key}=0"])
