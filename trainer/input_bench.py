"""`posters bench train-input`: the streamed train input beside the same batches from in-memory tensors.

    posters bench train-input --data PREPROCESSED [--config C] [--batch B] [--batches N] [--repeats R]
                              [--scales 1,4] [--json PATH]

On a preprocess output's train split, at the config's input size and the same batch size, in this process:
  in_memory    the split read whole into memory (`trainer.data.read_split`: the encoded PNGs), then shuffled
               batches decoded from those tensors (`trainer.data.genre_dataset`) — the baseline;
  streaming    phase 1's stream over the shards (`trainer.streaming.genre_batches`: interleaved reads, shuffle
               buffer, parallel parse and decode, prefetch);
  pk_streaming phase 2's P×K stream (`trainer.streaming.pk_batches`, the config's P and K) — context;
each timed over N batches after 5 warm-up batches, R times alternating, medians reported (images/s). Then peak RSS:
each of in_memory and streaming runs in a child process over the split at every scale (the train shards copied
k times into a scaled preprocess output), and the child's own peak (VmHWM) is reported. The target is
streaming ≥ 0.9 × in_memory images/s, and a streaming RSS that stays flat as the split grows.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from pipelines.common.command_line import command_parser, parse_command
from pipelines.config import Config
from pipelines.contracts import PREPROCESS_TRAIN_PREFIX

TARGET_RATIO = 0.9
WARMUP_BATCHES = 5


def _images_per_s(dataset, batch: int, batches: int) -> float:
    iterator = iter(dataset)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batch * batches / (time.perf_counter() - started)


def _datasets(data: str, config: Config, batch: int, cache: str) -> dict:
    """name → a function that builds that input (reading what it needs first)."""
    import tensorflow as tf

    from pipelines.contracts import FEATURE_PRIMARY_GENRE
    from trainer import data as in_memory
    from trainer import streaming

    size, settings = config.model.input_size, config.train
    vocabulary = in_memory.read_genre_vocabulary(data)

    def memory():
        split = in_memory.read_split(data, "train", vocabulary, size)
        return in_memory.genre_dataset(split, batch, size, settings.seed)

    def stream_input():
        return streaming.open_train(data, vocabulary, size, None, tf.distribute.get_strategy(), cache)

    def stream():
        return streaming.genre_batches(stream_input(), batch, settings.seed, settings.shuffle_buffer)

    def pk_stream():
        return streaming.pk_batches(stream_input(), settings.classes_per_batch, settings.examples_per_class,
                                    settings.seed, 1000, 1000, 0, settings.shuffle_buffer, FEATURE_PRIMARY_GENRE)

    return {"in_memory": memory, "streaming": stream, "pk_streaming": pk_stream}


def measure_throughput(data: str, config: Config, batch: int, batches: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="posters-bench-input-") as cache:
        builders = _datasets(data, config, batch, cache)
        datasets = {name: build() for name, build in builders.items()}
        pk_batch = config.train.classes_per_batch * config.train.examples_per_class
        runs = {name: [] for name in datasets}
        for _ in range(repeats):
            for name, dataset in datasets.items():
                runs[name].append(_images_per_s(dataset, pk_batch if name == "pk_streaming" else batch, batches))
    medians = {f"{name}_images_per_s": round(statistics.median(values), 1) for name, values in runs.items()}
    medians["streaming_over_in_memory"] = round(medians["streaming_images_per_s"]
                                                / medians["in_memory_images_per_s"], 3)
    return medians


def scaled_copy(data: str, copies: int, out: str) -> str:
    """A preprocess output whose train split is `data`'s train shards `copies` times (the rest as it is)."""
    folder, prefix = os.path.split(PREPROCESS_TRAIN_PREFIX)
    train_dir = os.path.join(data, folder)
    shutil.copytree(data, out, ignore=lambda where, names: names if os.path.samefile(where, train_dir) else [])
    for copy in range(copies):
        for shard in sorted(name for name in os.listdir(train_dir) if name.startswith(prefix)):
            copied = f"{prefix}-copy{copy:03d}{shard[len(prefix):]}"
            shutil.copy(os.path.join(train_dir, shard), os.path.join(out, folder, copied))
    return out


def child_peak_rss_mb(argv: list[str]) -> tuple[float, dict]:
    """Runs `python -m trainer.input_bench --child …`; its own peak RSS in MB and what it printed.

    The child reports its VmHWM (/proc/self/status): getrusage's ru_maxrss of a child also counts the memory of
    this (forked, TensorFlow-loaded) process before the exec, which would hide the child's own peak.
    """
    completed = subprocess.run([sys.executable, "-m", "trainer.input_bench", *argv], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if completed.returncode:
        raise RuntimeError(f"the measuring child {argv} failed ({completed.returncode}): {completed.stderr[-2000:]}")
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    return printed["peak_rss_mb"], printed


def _own_peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource  # not Linux: the child's own ru_maxrss (KB on Linux and BSD, bytes on macOS)

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(argv: list[str]) -> int:
    """In a child: build one input over the data, draw `batches` batches, print how many posters that was."""
    name, data, config_path, batch, batches, *overrides = argv
    from pipelines.config import load_config

    config = load_config(config_path, overrides)
    with tempfile.TemporaryDirectory(prefix="posters-bench-input-") as cache:
        dataset = _datasets(data, config, int(batch), cache)[name]()
        drawn = sum(int(images.shape[0]) for images, _ in dataset.take(int(batches)))
    print(json.dumps({"posters": drawn, "peak_rss_mb": _own_peak_rss_mb()}))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = command_parser("bench train-input", __doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a preprocess output (local), e.g. the demo's")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", default="1,4",
                        help="split sizes for the peak RSS, as copies of the train split ('': no RSS children)")
    parser.add_argument("--json", help="also write the results here")
    args, config, unknown = parse_command(parser, argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    results = measure_throughput(args.data, config, args.batch, args.batches, args.repeats)
    results["peak_rss_mb"] = {}
    with tempfile.TemporaryDirectory(prefix="posters-bench-scaled-") as scratch:
        for scale in (int(s) for s in args.scales.split(",") if s):
            data = scaled_copy(args.data, scale, os.path.join(scratch, f"x{scale}"))
            for name in ("in_memory", "streaming"):
                # Enough batches to pass over the whole split once, so that the stream's buffers fill up.
                posters = _train_posters(data)
                child = ["--child", name, data, args.config, str(args.batch), str(posters // args.batch + 1),
                         *args.overrides]
                results["peak_rss_mb"][f"{name} x{scale} ({posters} posters)"] = child_peak_rss_mb(child)[0]
    print(report(results, args.batch))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


def _train_posters(data: str) -> int:
    import tensorflow as tf

    from trainer.streaming import split_shards

    return sum(1 for _ in tf.data.TFRecordDataset(split_shards(data, "train"), compression_type="GZIP"))


def report(results: dict, batch: int) -> str:
    ratio = results["streaming_over_in_memory"]
    lines = [f"train input, batch {batch}: images/s (median)",
             f"  in memory (read_split + genre_dataset)  {results['in_memory_images_per_s']:>10,.1f}",
             f"  streaming (genre_batches)               {results['streaming_images_per_s']:>10,.1f}",
             f"  P×K streaming (pk_batches)              {results['pk_streaming_images_per_s']:>10,.1f}",
             f"streaming / in memory = {ratio:.3f} (target ≥ {TARGET_RATIO}: "
             f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})",
             "peak RSS of a child that builds the input and passes over the split once (MB):"]
    lines += [f"  {name:<40} {mb:>8,.1f}" for name, mb in results["peak_rss_mb"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
