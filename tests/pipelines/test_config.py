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


def test_a_missing_config_path_with_a_directory_is_an_error_not_the_packaged_copy(tmp_path):
    """`--config /missing/local.yaml` used to load the packaged local.yaml without a word."""
    for path in (tmp_path / "local.yaml", "/missing/local.yaml", "elsewhere/dataflow.yaml"):
        with pytest.raises(ConfigError, match=rf"config file not found: {path}$"):
            load_config(path)


def test_a_config_file_beside_the_cwd_wins_over_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.yaml").write_text("candidates:\n  k: 3\n")
    assert load_config("local.yaml").candidates.k == 3


def test_the_nightly_lock_must_go_stale_after_a_minute_at_least_or_never():
    with pytest.raises(ConfigError, match=r"nightly\.lock_stale_after_s must be at least 60, got 0"):
        load_config(None, ["nightly.lock_stale_after_s=0"])
    assert load_config(None, ["nightly.lock_stale_after_s=60"]).nightly.lock_stale_after_s == 60
    assert load_config(None, ["nightly.lock_stale_after_s=null"]).nightly.lock_stale_after_s is None


def test_an_override_that_is_not_yaml_is_one_line_naming_the_override():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["model.backbone=[oops"])
    message = str(caught.value)
    assert message.startswith("--set model.backbone=[oops: the value is not valid YAML: expected ',' or ']'")
    assert "\n" not in message


def test_invalid_yaml_in_a_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML: .*\(line 2, column 1\)$") as caught:
        load_config(write(tmp_path, "train: [unclosed\n"))
    assert "\n" not in str(caught.value)


def test_a_negative_read_retries_is_a_config_error():
    with pytest.raises(ConfigError, match=r"preprocess\.read_retries must be at least 0, got -1"):
        load_config("local.yaml", ["preprocess.read_retries=-1"])


def test_the_catalog_encoding_must_be_one_python_knows():
    with pytest.raises(ConfigError, match=r"--set catalog\.encoding=nope: catalog\.encoding is 'nope', which Python "
                                          "does not know"):
        load_config(None, ["catalog.encoding=nope"])
    assert load_config(None, ["catalog.encoding=latin-1"]).catalog.encoding == "latin-1"


def test_the_index_factory_must_be_one_faiss_can_build():
    with pytest.raises(ConfigError, match=r"index\.factory 'Bogus' is not a faiss index_factory string .*"
                                          "could not parse index string Bogus"):
        load_config(None, ["index.factory=Bogus"])
    # PQ32 fits only dimensions that are multiples of 32: still accepted, the build checks the actual dimension.
    for factory in ("Flat", "IVF64,Flat", "IVF4096_HNSW32,Flat", "IVF4096,PQ32x8", "HNSW32"):
        assert load_config(None, [f"index.factory={factory}"]).index.factory == factory


def test_an_unknown_backbone_is_refused_when_loading_with_the_choices():
    with pytest.raises(ConfigError, match=r"model\.backbone is 'resnet_9000'; choose one of efficientnet_v2_b0, "
                                          "mobilenet_v3_small, nasnet_large, nasnet_mobile, tiny_cnn"):
        load_config(None, ["model.backbone=resnet_9000"])


@pytest.mark.parametrize("key", ["train.warmup_learning_rate", "train.metric_learning_rate", "train.triplet_margin",
                                 "candidates.recency_half_life_days", "preprocess.max_reject_fraction",
                                 "preprocess.eval_fraction", "embed.max_reject_fraction", "index.min_recall_at_10",
                                 "nightly.overlap_alert_below", "nightly.lock_stale_after_s",
                                 "candidates.max_watch_weight"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_infinite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number, got {value.lstrip('.').replace('.', '')}"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("key, message", [("train.warmup_learning_rate", "must be positive"),
                                          ("train.metric_learning_rate", "must be positive"),
                                          ("train.triplet_margin", "must be at least 0"),
                                          ("candidates.recency_half_life_days", "must be positive"),
                                          ("candidates.max_watch_weight", "must be positive"),
                                          ("candidates.max_clock_skew_s", "must be at least 0"),
                                          ("preprocess.eval_fraction", "must be between 0 and 1")])
def test_negative_rates_margins_half_lives_and_fractions_are_refused(key, message):
    with pytest.raises(ConfigError, match=rf"{key} {message}, got -0.5"):
        load_config(None, [f"{key}=-0.5"])


def test_the_lock_heartbeat_renews_at_least_twice_per_stale_period():
    with pytest.raises(ConfigError, match=r"lock_heartbeat_s \(400.0\) must be at most half"):
        load_config(None, ["nightly.lock_stale_after_s=600", "nightly.lock_heartbeat_s=400"])
    assert load_config(None, ["nightly.lock_stale_after_s=60"]).nightly.heartbeat_interval_s == 15
    assert load_config(None, []).nightly.heartbeat_interval_s == 60
