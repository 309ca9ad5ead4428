"""The one config model: YAML files → pydantic models, with `--set key.path=value` overrides.

Every pipeline and the trainer read their settings through `load_config`; every rule about a value is
declared here, on its field (types, choices, bounds) or in a model validator (rules between fields), and
nowhere else. An unknown key, a value of the wrong type or outside its allowed set is a `ConfigError` whose
one line names the file (or the `--set` override), the key, and what is allowed.
"""
from __future__ import annotations

import codecs
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Positive = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
# The trainer's backbone registry (`trainer.backbones.BACKBONES`), named here because pipelines never import the
# trainer; tests/trainer/test_backbones.py checks the two agree.
BackboneName = Literal["nasnet_large", "nasnet_mobile", "efficientnet_v2_b0", "mobilenet_v3_small", "tiny_cnn"]
# Index factory strings are tried at these dimensions (one must build): a factory may fit only some (PQ32 needs a
# multiple of 32), and the embeddings' dimension is known only when the index is built.
_FACTORY_TRIAL_DIMS = (128, 768)


class ConfigError(ValueError):
    """A configuration file or override the user must fix; the message names the key and the source."""


class Section(BaseModel):
    # Unknown keys are errors; values are not coerced across types (a quoted "3" is not an int), except that
    # an int is accepted where a float is expected. NaN and ±inf are no float's value.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


class CatalogConfig(Section):
    # Manifest column → contract column (`title_id`, `title`, `genres`, `poster_uri`).
    columns: dict[str, str] = Field(default_factory=dict)
    # Separators a `genres` string is split on (all of them, wherever they occur). Tabs and line breaks inside
    # a genres cell always separate, listed or not: no genre name holds one.
    genre_separators: list[str] = Field(default_factory=lambda: ["|", ",", ";"])
    # Spelling variant → canonical genre (`{"Science Fiction": "Sci-Fi", "Romcom": "Romance"}`); keys match after
    # the same normalisation as genres (NFKC, invisible characters and extra spaces removed, dashes unified,
    # case-folded).
    genre_aliases: dict[str, str] = Field(default_factory=dict)
    # When the manifest has no poster column: posters are `<poster_root>/<title_id><poster_suffix>`.
    poster_root: Optional[str] = None
    poster_suffix: str = ".jpg"
    # Where posters may be read from (local directories or URI prefixes such as gs://bucket/posters; relative
    # ones against the manifest's directory). Empty: the manifest's directory and any gs:// bucket the
    # manifest names; `poster_root` is always allowed. A poster elsewhere is rejected, never read.
    allowed_roots: list[str] = Field(default_factory=list)
    # Text encoding of CSV and JSONL manifests; bytes that do not decode in it are an error naming the file.
    encoding: str = "utf-8"
    # `ReadCatalog` cuts the manifest into ranges of about this many bytes (Parquet: row groups), read in
    # parallel; a compressed manifest, or one in UTF-16/32, is one range.
    split_bytes: Positive = 8 * 1024 * 1024

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"catalog.encoding is {value!r}, which Python does not know; use a codec name such "
                             "as utf-8, latin-1 or cp1252") from None
        return value

    @field_validator("genre_separators")
    @classmethod
    def _non_empty_separators(cls, value: list[str]) -> list[str]:
        if any(not separator for separator in value):
            raise ValueError("catalog.genre_separators must not hold an empty string")
        return value


class ImageConfig(Section):
    min_side: Positive = 32
    max_pixels: Positive = 40_000_000
    max_bytes: Positive = 50_000_000


class HttpConfig(Section):
    """Posters whose URI is http:// or https:// (pipelines/common/http_posters.py), in every stage that reads them."""

    concurrency: Positive = 8  # posters fetched at once per worker process (threads sharing one connection pool)
    connect_timeout_s: PositiveFloat = 5.0  # per attempt
    read_timeout_s: PositiveFloat = 20.0  # per attempt: the longest wait for the headers or for the next bytes
    total_timeout_s: PositiveFloat = 60.0  # the whole download of one poster, from the first request
    retries: NonNegative = 3  # more attempts after a connection error, a timeout before the headers, 429 or 5xx
    backoff_s: NonNegativeFloat = 0.5  # waits backoff_s × 2^(n - 1) before the n-th retry (the first retry at once)
    max_retry_after_s: NonNegativeFloat = 60.0  # a server's Retry-After is honoured up to this many seconds
    max_bytes: Positive = 20_000_000  # a larger body is `http_too_large` (refused from Content-Length if declared)
    max_redirects: NonNegative = 5  # more is `http_too_many_redirects`
    # Allowed Content-Type prefixes (lower case); a response without Content-Type is let through to the validator.
    content_types: list[str] = Field(default_factory=lambda: ["image/", "application/octet-stream",
                                                              "binary/octet-stream"])
    user_agent: str = "poster-similarity/0.1"

    @field_validator("content_types")
    @classmethod
    def _lower_case_prefixes(cls, value: list[str]) -> list[str]:
        if not value or any(not prefix or prefix != prefix.lower() for prefix in value):
            raise ValueError("http.content_types must be a non-empty list of lower-case prefixes such as image/")
        return value


class PreprocessConfig(Section):
    duplicate_title_policy: Literal["reject", "keep_last"] = "reject"
    max_reject_fraction: Fraction = 0.2
    eval_fraction: Fraction = 0.2
    vocab_top_k: Optional[Positive] = None
    vocab_frequency_threshold: Positive = 1
    num_shards: NonNegative = 0  # 0: let the runner decide
    read_retries: NonNegative = 3
    # Leak-free splits: posters whose difference hashes (hash_size² bits) differ in at most this many bits are
    # near-duplicates and split with their title's group (byte-identical posters always are); null: only
    # byte-identical posters are grouped. 20 of 256 bits keeps the generator's re-encoded copies together and
    # distinct posters apart (measured: copies ≤ 14 bits apart, distinct posters ≥ 37).
    near_duplicate_max_distance: Optional[NonNegative] = 20
    near_duplicate_hash_size: int = Field(16, ge=5, le=32)
    # Rounds of label propagation that merge linked titles into groups; links still unsettled after them are
    # counted in `_stats.json` (`unsettled_duplicate_links`) and make the run fail.
    duplicate_group_rounds: Positive = 6


class ModelConfig(Section):
    backbone: BackboneName = "tiny_cnn"
    weights: str = "none"  # imagenet | none | /path/to/weights.h5
    input_size: Positive = 64
    embedding_dim: Positive = 128
    # BatchNormalization layers frozen while the backbone trains (inference mode: their statistics kept). auto:
    # frozen when the backbone starts from pretrained weights (imagenet or a file), trained when from none
    # (frozen random statistics normalise nothing, and such a backbone can collapse).
    freeze_batchnorm: Union[Literal["auto"], bool] = "auto"

    @field_validator("freeze_batchnorm", mode="before")
    @classmethod
    def _auto_or_bool(cls, value: Any) -> Any:
        if value != "auto" and not isinstance(value, bool):
            raise ValueError(f"model.freeze_batchnorm is {value!r}; choose one of auto, true, false")
        return value


class TrainConfig(Section):
    strategy: Literal["auto", "mirrored", "multi_worker", "default"] = "auto"
    per_replica_batch_size: Positive = 32
    seed: int = 42
    warmup_epochs: NonNegative = 2
    warmup_learning_rate: PositiveFloat = 1e-3
    # One list of layer-name prefixes per warm-up epoch to make trainable; [] keeps the previous set.
    unfreeze_schedule: list[list[str]] = Field(default_factory=list)
    metric_epochs: NonNegative = 3
    metric_learning_rate: PositiveFloat = 1e-3
    triplet_margin: NonNegativeFloat = 0.1
    triplet_distance: Literal["L2", "squared-L2", "angular"] = "angular"
    positives: Literal["primary_genre", "shared_genre"] = "primary_genre"
    # P × K batches: semi-hard mining needs at least two classes and two examples of each.
    classes_per_batch: Annotated[int, Field(ge=2)] = 8
    examples_per_class: Annotated[int, Field(ge=2)] = 4
    steps_per_epoch: Optional[Positive] = None
    # The streamed input (trainer/streaming.py): posters held in shuffle buffers, and the input pipelines a global
    # batch is split over (each reads its own shards); None: one per worker. Batches depend on it, not on workers.
    shuffle_buffer: Positive = 1024
    input_pipelines: Optional[Positive] = None
    # Phase 2 scores the eval split (precision@10) after every epoch and exports its best epoch's weights; it stops
    # after this many epochs without a better score. None: no per-epoch scoring, the last epoch is exported.
    early_stopping_patience: Optional[Positive] = 5
    # The collapse check after each phase, on the eval split's embeddings (pipelines/common/collapse.py): the run
    # fails, exporting nothing, when the spread or the effective rank is below, or the share of queries whose
    # top-10 neighbour scores are all tied is above, its bound. None switches a bound off.
    collapse_min_spread: Optional[Fraction] = 0.01
    collapse_min_effective_rank: Optional[Annotated[float, Field(ge=0)]] = 1.5
    collapse_max_tied_share: Optional[Fraction] = 0.5
    # The no-regression gate: the run fails, exporting nothing, when phase 2's eval precision@10 is below phase 1's
    # or below the colour-histogram reference's by more than this. None switches it off.
    regression_margin: Optional[Fraction] = 0.0


class EmbedConfig(Section):
    min_batch_size: Positive = 8
    max_batch_size: Positive = 64
    max_rows_per_file: Positive = 100_000
    max_reject_fraction: Fraction = 0.2
    # One model per machine instead of one per worker process (Beam's multi-process sharing): for models
    # that do not fit in memory, or on the accelerator, once per process.
    share_model_across_processes: bool = False
    # The accelerator the inference step alone asks for (a Beam resource hint: Dataflow's right fitting gives
    # only that step GPU workers), e.g. "type:nvidia-tesla-t4;count:1;install-nvidia-driver"; None: no GPU.
    # Do not combine it with the job-wide `worker_accelerator` service option (Dataflow's right-fitting guide).
    accelerator: Optional[Annotated[str, Field(pattern=r"^type:[a-z0-9-]+;count:[1-9][0-9]*(;[^;]+)*$")]] = None

    @model_validator(mode="after")
    def _batch_bounds(self):
        if self.min_batch_size > self.max_batch_size:
            raise ValueError("embed.min_batch_size must not exceed embed.max_batch_size")
        return self


class IndexConfig(Section):
    # faiss: any index_factory string (`factory`); scann: ScaNN's tree + AH + reorder (the `scann` extra).
    backend: Literal["faiss", "scann"] = "faiss"
    factory: Optional[str] = None  # a faiss index_factory string (e.g. HNSW32,Flat); None: chosen by size
    flat_max_vectors: Positive = 50_000  # up to this many vectors: exact search (Flat); above: IVF
    nlist: Optional[Positive] = None  # IVF inverted lists; None: about 2·sqrt(n), a power of two
    nprobe: Positive = 4  # lists searched per query; with tune_nprobe, the smallest value tried
    tune_nprobe: bool = True  # raise nprobe (steps of √2, up to nlist/4) until recall@10 reaches min_recall_at_10
    num_shards: NonNegative = 0  # 0: ceil(n / vectors_per_shard)
    vectors_per_shard: Positive = 500_000
    train_sample_size: Optional[Positive] = None  # None: 64 per inverted list (at least 10,000)
    recall_queries: Positive = 500  # sample titles whose recall@10 against exact search goes in the manifest
    min_recall_at_10: Fraction = 0.95  # below this the build fails and nothing is published
    # Above this share of recall queries whose exact top-10 neighbour scores are all tied (e.g. every embedding
    # equal: a collapsed model) the build fails and nothing is published; None: not checked.
    max_tied_neighbour_share: Optional[Fraction] = 0.5
    keep_versions: Positive = 3  # published versions kept (the live one included); older ones are deleted
    hnsw_ef_construction: Positive = 80  # HNSW graphs (faiss HNSW32,Flat); faiss' 40 missed recall 0.95 here
    # ScaNN (backend scann): leaves per shard (None: about 2·sqrt(shard size)), searched: nprobe (tuned likewise)
    scann_num_leaves: Optional[Positive] = None
    scann_dims_per_block: Positive = 2  # anisotropic quantisation: dimensions per 4-bit code
    scann_anisotropic_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    scann_reorder: Annotated[int, Field(ge=11)] = 100  # candidates re-scored exactly (≥ k + 1)

    @model_validator(mode="after")
    def _factory_is_faiss(self):
        if self.backend == "scann" and self.factory is not None:
            raise ValueError(f"index.factory {self.factory!r} is a faiss setting; with index.backend scann leave "
                             "it unset (ScaNN is set by index.scann_*)")
        return self

    @field_validator("factory")
    @classmethod
    def _faiss_can_build(cls, factory: Optional[str]) -> Optional[str]:
        if factory is None:
            return factory
        import faiss  # only a config that names a factory pays for importing faiss

        problems = []
        for dim in _FACTORY_TRIAL_DIMS:
            try:
                faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
                return factory
            except RuntimeError as err:
                problems.append(str(err).rsplit(": ", 1)[-1].strip())
        raise ValueError(f"index.factory {factory!r} is not a faiss index_factory string faiss can build "
                         f"({problems[-1]}); e.g. Flat, IVF1024,Flat, IVF1024_HNSW32,Flat, IVF1024,PQ32x8")


class CandidatesConfig(Section):
    k: Positive = 20  # neighbours per title and candidates per user
    # A watch's weight halves every this many days; None: no decay.
    recency_half_life_days: Optional[PositiveFloat] = None
    query_batch_size: Positive = 256  # queries searched together (the largest batch; Beam sizes them adaptively)
    # A watch weighing more than this (or negative, NaN, inf) is skipped as `bad_weight`.
    max_watch_weight: PositiveFloat = 1000.0
    # A watch dated more than this after the run's start is skipped as `future_timestamp` (clocks drift).
    max_clock_skew_s: NonNegativeFloat = 300.0
    # faiss threads per worker process for the searches; None: faiss' default (every core). Where a machine runs
    # one worker process per core (Dataflow; DirectRunner multi_processing), 1 keeps them from oversubscribing.
    faiss_threads: Optional[Positive] = None
    # item→item for every title: "list_scan" reads each inverted list once for all the queries that probe it
    # (faiss' big_batch_search, split by list groups; IVF indexes it applies to), "per_query" searches title by
    # title (what other indexes always do).
    all_titles_search: Literal["list_scan", "per_query"] = "list_scan"
    # The list scan's unit of work: a group of inverted lists probed by about this many queries (memory per
    # worker ≈ this × (dim × 4 + k × 12) bytes, whatever the catalog's size).
    all_titles_queries_per_group: Annotated[int, Field(ge=1000)] = 50_000


class NightlyConfig(Section):
    # A lock older than this is taken over (its run is presumed dead); None: a held lock always refuses.
    # At least a minute: 0 would let every nightly take over a running one's lock.
    lock_stale_after_s: Optional[Annotated[float, Field(ge=60)]] = 6 * 3600
    # A live run renews its lock this often (`locks.Heartbeat`), so it is never stale however long it runs,
    # and publishes only within its lease; at most half of lock_stale_after_s. None: 60 s, or a quarter of
    # lock_stale_after_s if that is shorter.
    lock_heartbeat_s: Optional[Annotated[float, Field(ge=1)]] = None
    overlap_k: Positive = 10  # overlap@k of today's item→item lists with yesterday's, for unchanged posters
    overlap_alert_below: Fraction = 0.5  # an overlap@k below this is flagged in the summary and the log
    # The overlap report splits both nights by title hash into partitions of about this many titles and holds
    # one partition at a time (memory per partition ~ this × (k + 2) short strings per night).
    overlap_rows_per_partition: Positive = 100_000
    # Beam flags for the embed stage only (e.g. a GPU accelerator on Dataflow), after the shared ones.
    embed_beam_args: list[str] = Field(default_factory=list)
    # Run `posters evaluate` between embed and index and stop the night when a gate (`evaluate.*`) fails.
    # It holds tonight's embeddings in the launcher (512 MB per million titles): see docs/scaling.md.
    evaluate: bool = True

    @property
    def heartbeat_interval_s(self) -> float:
        if self.lock_heartbeat_s is not None:
            return self.lock_heartbeat_s
        return 60.0 if self.lock_stale_after_s is None else min(60.0, self.lock_stale_after_s / 4)

    @model_validator(mode="after")
    def _heartbeat_within_stale_limit(self):
        if (self.lock_heartbeat_s is not None and self.lock_stale_after_s is not None
                and self.lock_heartbeat_s > self.lock_stale_after_s / 2):
            raise ValueError(f"nightly.lock_heartbeat_s ({self.lock_heartbeat_s}) must be at most half of "
                             f"nightly.lock_stale_after_s ({self.lock_stale_after_s})")
        return self


class RetentionConfig(Section):
    # `posters gc` (and the end of every nightly) removes partial index versions and staging directories
    # that nothing changed for this long; 0: any, however recent (only when no run can be writing there).
    older_than_hours: Annotated[float, Field(ge=0)] = 24.0


class EvaluateConfig(Section):
    k: Positive = 10  # top-k of every retrieval and candidates measure
    seed: int = 0  # random reference vectors, near-duplicate edits, samples, the random baseline, the map
    # Titles scored against each other: the preprocess' eval split (titles the model did not train on), or all.
    retrieval_split: Literal["eval", "all"] = "eval"
    # Titles evaluated: a stable hash sample of about this many (every title of a smaller catalog); what the
    # evaluation holds in memory grows with this, not with the catalog (docs/scaling.md).
    max_titles: Positive = 50_000
    retrieval_max_queries: Positive = 3000  # titles scored against each other (a seeded sample above this)
    near_duplicate_posters: Positive = 200  # eval posters copied (4 edited copies each) to find their original
    reference_max_titles: Positive = 20_000  # trivial image features (read every poster) only up to this catalog size
    holdout_last: Positive = 1  # each user's last watches (by timestamp) held out of the history
    map_projection: Literal["umap", "pca"] = "umap"  # the 2-D map of the embedding (pca: fast, for tests)
    map_max_points: Positive = 3000  # titles drawn on the map and exported to the Embedding Projector
    map_posters: NonNegative = 16  # posters drawn on the map at their positions
    report_titles: Positive = 6  # titles (across genres) whose similar-poster grids the report shows
    # Gates (`pipelines.evaluate.gates.check_gates`); None switches a gate off.
    min_near_duplicate_recall_at_1: Optional[Fraction] = 0.9
    min_hit_rate_vs_popularity: Optional[Annotated[float, Field(ge=0)]] = 1.0  # candidates' hit rate@k ÷ popularity's
    max_drop_from_previous: Optional[Fraction] = 0.1  # largest relative drop of a headline measure from last night


class Config(Section):
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    image: ImageConfig = Field(default_factory=ImageConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    nightly: NightlyConfig = Field(default_factory=NightlyConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    # Beam pipeline options (flag name → value) added before those given on the command line.
    beam: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_keep_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict):  # `train:` with nothing under it
            return {key: ({} if value is None and key in cls.model_fields else value) for key, value in raw.items()}
        return raw


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped in the package (`local.yaml`, …), so installed workers find it too."""
    return Path(str(resources.files("configs").joinpath(name)))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads `path` (None: defaults only), applies `key.path=value` overrides, and validates the result."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        raw = _read_yaml(Path(path), source)
    config = _validate(raw, source)
    if not overrides:
        return config
    # The file alone is validated first, so an error in an override names the override, not the file.
    for item in overrides:
        _apply_override(raw, item)
    return _validate(raw, "--set " + " ".join(overrides))


def _read_yaml(file: Path, source: str) -> dict:
    if not file.exists():
        # Only a bare name (`local.yaml`) means a packaged config; a path that names a directory is that file,
        # and a missing one is an error, never silently another file.
        packaged = packaged_config_path(file.name)
        if file.parent != Path(".") or not packaged.exists():
            raise ConfigError(f"config file not found: {source}")
        file = packaged
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return raw


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
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item}: the value is not valid YAML: {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message → one line: what is wrong and where."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None:
        return " ".join(str(err).split())
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _validate(raw: dict, source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err.errors()[0])}") from None


def _describe(error: dict) -> str:
    """One pydantic error → today's wording: the dotted key, what it got, what is allowed."""
    loc = [part for part in error["loc"] if not _is_union_branch(part)]
    key = ".".join(str(part) for part in loc) or "top level"
    value, kind, ctx = error.get("input"), error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        known = ", ".join(sorted(_model_at(loc[:-1]).model_fields))
        return f"unknown key {key} (known: {known})"
    if kind == "literal_error":
        choices = sorted(typing.get_args(_annotation_at(loc)) or [])
        return f"{key} is {value!r}; choose one of {', '.join(map(str, choices))}"
    if kind == "finite_number":
        return f"{key} must be a finite number, got {value}"
    if kind == "greater_than" and ctx.get("gt") == 0:
        return f"{key} must be positive, got {value}"
    if kind in ("greater_than_equal", "less_than_equal") and _annotation_at(loc) is not None:
        low, high = _bounds(loc)
        low = ctx.get("ge", low)  # a bound inside an Optional is not on the field's own metadata
        if (low, high) == (0.0, 1.0):
            return f"{key} must be between 0 and 1, got {value}"
        return f"{key} must be at least {low:g}, got {value}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key} must be a mapping, got {value!r}"
    if kind == "list_type":
        return f"{key} must be a list, got {value!r}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{key} must be {kind.split('_')[0]}, got {value!r}"
    return f"{key}: {error['msg']}, got {value!r}"


def _is_union_branch(part: Any) -> bool:
    # pydantic names the branch of an Optional/Annotated it tried (`int`, `constrained-int`, …) in the loc.
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "none") or part.startswith("constrained"))


def _model_at(loc: list) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


def _annotation_at(loc: list) -> Any:
    """The field's type with Optional and Annotated peeled off (None when `loc` is not a field)."""
    if not loc or not isinstance(loc[-1], str):
        return None
    fields = _model_at(loc[:-1]).model_fields
    if loc[-1] not in fields:
        return None
    annotation = fields[loc[-1]].annotation
    while typing.get_origin(annotation) in (typing.Union, Annotated):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def _bounds(loc: list) -> tuple[Optional[float], Optional[float]]:
    field = _model_at(loc[:-1]).model_fields[loc[-1]]
    low = high = None
    for meta in field.metadata:
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
    return low, high
