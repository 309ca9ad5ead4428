"""The one config model: typed values, named errors, overrides, and the shipped configs all load."""
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
    assert (config.model.embedding_dim, config.train.triplet_distance, config.train.triplet_margin) == (
        128, "angular", 0.1)


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
    choices = r"train\.triplet_distance is 'cosine'; choose one of L2, angular, squared-L2"
    with pytest.raises(ConfigError, match=choices):
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


@pytest.mark.parametrize("key", ["train.per_replica_batch_size", "index.nprobe", "index.nlist", "image.min_side",
                                 "candidates.recency_half_life_days"])
def test_sizes_that_must_be_positive_are_checked_when_loading(key):
    with pytest.raises(ConfigError, match=rf"{key} must be positive, got 0"):
        load_config(None, [f"{key}=0"])


@pytest.mark.parametrize("key, least", [("train.examples_per_class", 2), ("train.classes_per_batch", 2),
                                        ("index.num_shards", 0), ("preprocess.read_retries", 0)])
def test_lower_bounds_are_checked_when_loading(key, least):
    with pytest.raises(ConfigError, match=rf"--set {key}=-1: {key} must be at least {least}, got -1"):
        load_config(None, [f"{key}=-1"])


def test_a_rule_between_two_keys_names_both():
    with pytest.raises(ConfigError, match="embed.min_batch_size must not exceed embed.max_batch_size"):
        load_config(None, ["embed.min_batch_size=128", "embed.max_batch_size=64"])


def test_a_quoted_number_is_not_an_int():
    with pytest.raises(ConfigError, match=r"index\.nprobe must be int, got '8'"):
        load_config(None, ["index.nprobe='8'"])


def test_a_section_that_is_not_a_mapping_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: train must be a mapping, got 3"):
        load_config(write(tmp_path, "train: 3\n"))


def test_config_values_round_trip_through_a_dump():
    config = load_config("local.yaml", ["train.unfreeze_schedule=[[a], []]"])
    assert Config.model_validate(config.model_dump()) == config
