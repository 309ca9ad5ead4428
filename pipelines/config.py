"""The one config loader: YAML files → typed, validated dataclasses, with `--set key.path=value` overrides.

Every pipeline and the trainer read their settings through `load_config`. An unknown key, a value of the wrong
type or a value outside its allowed set is a `ConfigError` that names the key and the file.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml


class ConfigError(ValueError):
    """A configuration file or override the user must fix; the message names the key and the source."""


@dataclass
class CatalogConfig:
    # Manifest column → contract column (`title_id`, `title`, `genres`, `poster_uri`).
    columns: dict[str, str] = field(default_factory=dict)
    # Separators tried, in order, when `genres` is one string.
    genre_separators: list[str] = field(default_factory=lambda: ["|", ","])
    # When the manifest has no poster column: posters are `<poster_root>/<title_id><poster_suffix>`.
    poster_root: Optional[str] = None
    poster_suffix: str = ".jpg"
    # Text encoding of CSV manifests; undecodable bytes are replaced, never fatal.
    encoding: str = "utf-8"


@dataclass
class ImageConfig:
    min_side: int = 32
    max_pixels: int = 40_000_000
    max_bytes: int = 50_000_000


@dataclass
class PreprocessConfig:
    duplicate_title_policy: str = "reject"  # reject | keep_last
    max_reject_fraction: float = 0.2
    eval_fraction: float = 0.2
    vocab_top_k: Optional[int] = None
    vocab_frequency_threshold: int = 1
    num_shards: int = 0  # 0: let the runner decide
    read_retries: int = 3


@dataclass
class ModelConfig:
    backbone: str = "tiny_cnn"
    weights: str = "none"  # imagenet | none | /path/to/weights.h5
    input_size: int = 64
    embedding_dim: int = 128


@dataclass
class TrainConfig:
    strategy: str = "auto"  # auto | mirrored | multi_worker | default
    per_replica_batch_size: int = 32
    seed: int = 42
    warmup_epochs: int = 2
    warmup_learning_rate: float = 1e-3
    # One list of layer-name prefixes per warm-up epoch to make trainable; [] keeps the previous set.
    unfreeze_schedule: list[list[str]] = field(default_factory=list)
    metric_epochs: int = 3
    metric_learning_rate: float = 1e-3
    triplet_margin: float = 0.1
    triplet_distance: str = "angular"  # L2 | squared-L2 | angular
    positives: str = "primary_genre"  # primary_genre | shared_genre
    classes_per_batch: int = 8
    examples_per_class: int = 4
    steps_per_epoch: Optional[int] = None


@dataclass
class EmbedConfig:
    min_batch_size: int = 8
    max_batch_size: int = 64
    max_rows_per_file: int = 100_000
    max_reject_fraction: float = 0.2
    # One model per machine instead of one per worker process (Beam's multi-process sharing): for models
    # that do not fit in memory, or on the accelerator, once per process.
    share_model_across_processes: bool = False


@dataclass
class IndexConfig:
    factory: Optional[str] = None  # a faiss index_factory string; None: chosen by size
    flat_max_vectors: int = 50_000  # up to this many vectors: exact search (Flat); above: IVF
    nlist: Optional[int] = None  # IVF inverted lists; None: about 2·sqrt(n), a power of two
    nprobe: int = 4  # lists searched per query; with tune_nprobe, the smallest value tried
    tune_nprobe: bool = True  # raise nprobe (steps of √2, up to nlist/4) until recall@10 reaches min_recall_at_10
    num_shards: int = 0  # 0: ceil(n / vectors_per_shard)
    vectors_per_shard: int = 500_000
    train_sample_size: Optional[int] = None  # None: 64 per inverted list (at least 10,000)
    recall_queries: int = 500  # sample titles whose recall@10 against exact search goes in the manifest
    min_recall_at_10: float = 0.95  # below this the build fails and nothing is published
    keep_versions: int = 3  # published versions kept (the live one included); older ones are deleted


@dataclass
class CandidatesConfig:
    k: int = 20  # neighbours per title and candidates per user
    recency_half_life_days: Optional[float] = None  # a watch's weight halves every this many days; None: no decay
    query_batch_size: int = 256  # queries searched together (the largest batch; Beam sizes them adaptively)


@dataclass
class NightlyConfig:
    # A lock older than this is taken over (its run is presumed dead); None: a held lock always refuses.
    lock_stale_after_s: Optional[float] = 6 * 3600
    overlap_k: int = 10  # overlap@k of today's item→item lists with yesterday's, for unchanged posters
    overlap_alert_below: float = 0.5  # an overlap@k below this is flagged in the summary and the log
    # Beam flags for the embed stage only (e.g. a GPU accelerator on Dataflow), after the shared ones.
    embed_beam_args: list[str] = field(default_factory=list)


@dataclass
class Config:
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    candidates: CandidatesConfig = field(default_factory=CandidatesConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    # Beam pipeline options (flag name → value) added before those given on the command line.
    beam: dict[str, Any] = field(default_factory=dict)


CHOICES = {
    "preprocess.duplicate_title_policy": {"reject", "keep_last"},
    "train.strategy": {"auto", "mirrored", "multi_worker", "default"},
    "train.triplet_distance": {"L2", "squared-L2", "angular"},
    "train.positives": {"primary_genre", "shared_genre"},
}
# Keys outside the all-positive sections above that must be positive when set (0 means "auto" elsewhere).
POSITIVE = ("train.per_replica_batch_size", "train.classes_per_batch", "train.examples_per_class",
            "train.steps_per_epoch", "index.nprobe", "index.keep_versions", "index.recall_queries",
            "index.vectors_per_shard", "index.flat_max_vectors")
FRACTIONS = {"preprocess.max_reject_fraction", "preprocess.eval_fraction", "embed.max_reject_fraction",
             "index.min_recall_at_10", "nightly.overlap_alert_below"}


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped in the package (`local.yaml`, …), so installed workers find it too."""
    return Path(str(resources.files("configs").joinpath(name)))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads `path` (None: defaults only), applies `key.path=value` overrides, and validates the result."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.exists():
            # `configs/local.yaml` or `local.yaml` outside a checkout (installed workers): the packaged copy.
            packaged = packaged_config_path(file.name)
            if not packaged.exists():
                raise ConfigError(f"config file not found: {path}")
            file = packaged
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections")
    config = _build(Config, raw, "", source)
    _check_values(config, source)
    if not overrides:
        return config
    # Validate the file alone first, so an error in an override names the override, not the file.
    for item in overrides:
        _apply_override(raw, item)
    source = "--set " + " ".join(overrides)
    config = _build(Config, raw, "", source)
    _check_values(config, source)
    return config


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:  # an absent section, or one left empty in the file (`train:`)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


def _build(cls, raw: Any, prefix: str, source: str):
    if raw is None:  # a section left empty (`train:`) keeps its defaults
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key + ".", source)
        else:
            values[name] = _coerce(hint, value, key, source)
    return cls(**values)


def _coerce(hint, value, key: str, source: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, key, source)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")
    return value


def _check_values(config: Config, source: str) -> None:
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"{source}: {key} is {value!r}; choose one of {', '.join(sorted(allowed))}")
    for key in FRACTIONS:
        value = _get(config, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{source}: {key} must be between 0 and 1, got {value}")
    for section in (config.image, config.model, config.embed, config.candidates, config.nightly):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise ConfigError(f"{source}: {_section_name(config, section)}.{f.name} must be positive, got {value}")
    for key in POSITIVE:
        value = _get(config, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{source}: {key} must be positive, got {value}")
    if config.embed.min_batch_size > config.embed.max_batch_size:
        raise ConfigError(f"{source}: embed.min_batch_size must not exceed embed.max_batch_size")
    half_life = config.candidates.recency_half_life_days
    if half_life is not None and half_life <= 0:
        raise ConfigError(f"{source}: candidates.recency_half_life_days must be positive (or null for no decay), "
                          f"got {half_life}")


def _get(config: Config, key: str):
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _section_name(config: Config, section) -> str:
    return next(f.name for f in dataclasses.fields(config) if getattr(config, f.name) is section)
