"""The embedding seen from above: a 2-D map coloured by primary genre with a few posters drawn where they sit,
and an export for TensorBoard's Embedding Projector (vectors TSV, metadata TSV, sprite image, config).

The map is UMAP (cosine, seeded: the same map for the same vectors) or, for fast tests, PCA.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image, ImageOps

from pipelines.common import storage
from pipelines.common.retrieval_metrics import normalise

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402

SPRITE_TILE = (32, 48)  # one poster in the Projector's sprite, width × height
SPRITE_MAX_SIDE = 8192  # the Projector refuses larger sprites
MAP_POSTER_HEIGHT = 42
MIN_UMAP_POINTS = 8


def projection_for(method: str, n: int) -> str:
    """The projection used for `n` points: UMAP's spectral start needs more than a handful, PCA stands in."""
    return "pca" if n < MIN_UMAP_POINTS else method


def project_2d(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    """[n, d] → [n, 2]: UMAP (n_neighbors 15, min_dist 0.1, cosine) or PCA of the unit vectors (also for UMAP
    below `MIN_UMAP_POINTS` points, see `projection_for`)."""
    unit = normalise(vectors)
    if projection_for(method, len(unit)) == "pca":
        centred = unit - unit.mean(axis=0)
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        return (centred @ components[:2].T).astype(np.float32)
    import umap  # heavy (numba): only when a map is drawn

    reducer = umap.UMAP(n_neighbors=min(15, len(unit) - 1), min_dist=0.1, metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(unit), np.float32)


def genre_colours(primary: Sequence[str]) -> dict[str, tuple]:
    names = sorted(set(primary))
    palette = plt.get_cmap("tab20")
    return {name: palette(i % 20) for i, name in enumerate(names)}


def map_png(points: np.ndarray, primary: Sequence[str], posters: dict[int, bytes], title: str) -> bytes:
    """PNG of the map: one dot per title coloured by its primary genre; `posters` (row → encoded poster)
    drawn at their rows' positions."""
    colours = genre_colours(primary)
    figure, axis = plt.subplots(figsize=(11, 8.5))
    for name, colour in colours.items():
        rows = np.array([g == name for g in primary])
        axis.scatter(points[rows, 0], points[rows, 1], s=16, color=colour, label=name, alpha=0.85, linewidths=0,
                     zorder=3)
    for row, poster in posters.items():
        image = ImageOps.contain(Image.open(io.BytesIO(poster)).convert("RGB"), (200, MAP_POSTER_HEIGHT))
        box = AnnotationBbox(OffsetImage(np.asarray(image), zoom=1.0, alpha=0.9), tuple(points[row]), frameon=True,
                             pad=0.1, bboxprops={"edgecolor": colours[primary[row]], "linewidth": 2})
        axis.add_artist(box)
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, title="primary genre")
    figure.tight_layout()
    figure.set_layout_engine(None)  # laid out: without an engine, savefig does not draw the figure twice
    return _png(figure)


def spread_rows(primary: Sequence[str], count: int, seed: int) -> list[int]:
    """`count` rows spread over the genres (round-robin over the primary genres, seeded within each)."""
    rng = np.random.default_rng(seed)
    by_genre: dict[str, list[int]] = {}
    for row, genre in enumerate(primary):
        by_genre.setdefault(genre, []).append(row)
    queues = {genre: list(rng.permutation(rows)) for genre, rows in sorted(by_genre.items())}
    picked: list[int] = []
    while len(picked) < count and any(queues.values()):
        for genre in sorted(queues):
            if queues[genre] and len(picked) < count:
                picked.append(int(queues[genre].pop()))
    return picked


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


# --- Embedding Projector ---------------------------------------------------------------------------------------
def sprite_png(posters: Sequence[bytes | None]) -> tuple[bytes, tuple[int, int]]:
    """One sprite of every poster (grey where unreadable), row-major; → (PNG bytes, single image size)."""
    columns = math.ceil(math.sqrt(len(posters)))
    tile = SPRITE_TILE
    if columns * tile[1] > SPRITE_MAX_SIDE:  # shrink the tiles until the sheet fits
        scale = SPRITE_MAX_SIDE / (columns * tile[1])
        tile = (max(1, int(tile[0] * scale)), max(1, int(tile[1] * scale)))
    sheet = Image.new("RGB", (columns * tile[0], math.ceil(len(posters) / columns) * tile[1]), (128, 128, 128))
    for i, poster in enumerate(posters):
        if poster is None:
            continue
        try:
            image = Image.open(io.BytesIO(poster)).convert("RGB").resize(tile, Image.Resampling.BOX)
        except Exception:  # noqa: BLE001 — one unreadable poster leaves a grey tile, not a failed export
            continue
        sheet.paste(image, ((i % columns) * tile[0], (i // columns) * tile[1]))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue(), tile


def write_projector(directory: str, vectors: np.ndarray, metadata: Sequence[dict], posters: Sequence[bytes | None],
                    name: str) -> dict:
    """Writes `vectors.tsv`, `metadata.tsv` (a header, then one row per vector), `sprite.png` and
    `projector_config.json` (what projector.tensorflow.org's "Load" and TensorBoard read) under `directory`."""
    columns = list(metadata[0]) if metadata else ["title_id"]
    storage.write_bytes(storage.join(directory, "vectors.tsv"),
                        "".join("\t".join(f"{v:.5f}" for v in row) + "\n" for row in vectors).encode())
    clean = [[str(row.get(c, "")).replace("\t", " ").replace("\n", " ") for c in columns] for row in metadata]
    storage.write_bytes(storage.join(directory, "metadata.tsv"),
                        ("\t".join(columns) + "\n" + "".join("\t".join(r) + "\n" for r in clean)).encode())
    sprite, tile = sprite_png(posters)
    storage.write_bytes(storage.join(directory, "sprite.png"), sprite)
    config = {"embeddings": [{"tensorName": name, "tensorShape": list(vectors.shape), "tensorPath": "vectors.tsv",
                              "metadataPath": "metadata.tsv",
                              "sprite": {"imagePath": "sprite.png", "singleImageDim": list(tile)}}]}
    storage.write_json(storage.join(directory, "projector_config.json"), config)
    return {"directory": directory, "points": int(len(vectors)), "sprite_tile": list(tile)}
