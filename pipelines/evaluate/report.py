"""report.html: one self-contained page (every image inlined as a data URI, no script, no external request)
with the evaluation's tables, the charts, similar-poster grids for titles across genres and the mix."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageOps

THUMBNAIL = (120, 180)
CHARTS = (  # name in `charts` → caption, in page order
    ("training_curves", "Training: both phases' losses per epoch and the eval-split retrieval of each embedding"),
    ("retrieval_by_genre", "Retrieval by genre, beside the reference points"),
    ("distance_histograms", "Cosine distances of poster pairs that share a genre and pairs that share none"),
    ("near_duplicates", "Near-duplicates: edited copies finding their original in the whole catalog"),
    ("candidates", "Candidates against each user's held-out last watches, beside the baselines"),
    ("map", "The embedding from above: a 2-D map of the catalog (UMAP, or PCA where configured), coloured by "
            "primary genre"),
)
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1250px;color:#1b1b1b;
background:#fbfbf9}h1{font-size:26px}h2{margin-top:36px;border-bottom:2px solid #d65028;padding-bottom:4px}
table{border-collapse:collapse;margin:10px 0;font-size:14px}th,td{border:1px solid #ddd;padding:4px 9px;
text-align:right}th:first-child,td:first-child{text-align:left}thead th{background:#f0eeea}
.fail{color:#b00020;font-weight:600}.pass{color:#1b7f3b;font-weight:600}figure{margin:14px 0}
figure img{max-width:100%;border:1px solid #e4e2dd}figcaption{color:#555;font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0 20px}.tile{width:120px;font-size:11px}
.tile img,.tile .missing{width:120px;height:180px;display:block;object-fit:cover;background:#ccc}
.query img{outline:4px solid #d65028}.note{color:#666}.muted{color:#666;font-size:13px}
"""


@dataclass(frozen=True)
class PosterTile:
    image: Optional[bytes]  # a JPEG thumbnail (`thumbnail_jpeg`); None draws a grey card
    title: str
    note: str


@dataclass(frozen=True)
class PosterRow:
    heading: str
    queries: Sequence[PosterTile]
    neighbours: Sequence[PosterTile]


def thumbnail_jpeg(poster: Optional[bytes]) -> Optional[bytes]:
    """A poster shrunk into 120×180 as JPEG bytes (None when it cannot be read)."""
    if not poster:
        return None
    try:
        with Image.open(io.BytesIO(poster)) as image:
            small = ImageOps.contain(image.convert("RGB"), THUMBNAIL)
    except Exception:  # noqa: BLE001 — an unreadable poster becomes a grey card in the report
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=82)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape("–" if value is None else str(value))


def table(rows: dict[str, dict], columns: Sequence[str], first: str = "") -> str:
    """An HTML table: one row per key of `rows`, one column per name in `columns`."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{_cell(values.get(c))}</td>" for c in columns)
                   + "</tr>" for name, values in rows.items())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tile(tile: PosterTile, query: bool) -> str:
    picture = (f'<img alt="{html.escape(tile.title)}" src="{data_uri(tile.image, "image/jpeg")}">' if tile.image
               else '<div class="missing"></div>')
    return (f'<div class="tile{" query" if query else ""}">{picture}<div>{html.escape(tile.title)}</div>'
            f'<div class="note">{html.escape(tile.note)}</div></div>')


def poster_rows(rows: Sequence[PosterRow]) -> str:
    return "".join(f"<h3>{html.escape(row.heading)}</h3><div class=\"row\">"
                   + "".join(_tile(t, True) for t in row.queries) + "".join(_tile(t, False) for t in row.neighbours)
                   + "</div>" for row in rows)


def _figure(name: str, png: bytes, caption: str) -> str:
    return (f'<figure id="{name}"><img alt="{html.escape(caption)}" src="{data_uri(png, "image/png")}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _gates(evaluation: dict) -> str:
    gates = evaluation.get("gates")
    if gates is None:
        return ""
    if not gates["failures"]:
        return '<p class="pass">Every gate passed.</p>'
    return "".join(f'<p class="fail">✗ {html.escape(line)}</p>' for line in gates["failures"])


def _sections(evaluation: dict) -> list[str]:
    k = evaluation.get("k", 10)
    parts = []
    retrieval = evaluation.get("retrieval", {})
    sample = evaluation.get("retrieval_sample", {})
    parts.append(f"<h2>Retrieval by genre</h2><p class=\"muted\">{html.escape(sample.get('note', ''))}</p>" + table(
        retrieval, [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}", "map_at_r", "queries"],
        "embedding"))
    by_genre = retrieval.get("embedding", {}).get("by_genre", {})
    if by_genre:
        parts.append("<h3>The embedding, genre by genre</h3>" + table(
            by_genre, [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", "map_at_r", "queries"], "genre"))
    if evaluation.get("distances"):
        parts.append("<h2>Distances</h2>" + table(evaluation["distances"],
                                                  ["mean_same", "mean_different", "d_prime", "auc"], "embedding"))
    near = evaluation.get("near_duplicates")
    if near:
        parts.append(f"<h2>Near-duplicates</h2><p class=\"muted\">{html.escape(near.get('note', ''))}</p>"
                     + table({name: values for name, values in near.items() if isinstance(values, dict)},
                             ["recall_at_1", "recall_at_10", "copies"], "features"))
        by_edit = near.get("embedding", {}).get("by_edit", {})
        parts.append("<h3>The embedding, edit by edit</h3>" + table(by_edit, ["recall_at_1", "recall_at_10",
                                                                               "copies"], "edit"))
    candidates = evaluation.get("candidates")
    if candidates:
        measures = [f"hit_rate_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", "catalog_coverage", "gini_of_exposure",
                    "intra_list_distance", "genre_entropy_bits", "cold_start_coverage"]
        parts.append("<h2>Candidates</h2><p class=\"muted\">"
                     f"{candidates['users_scored']} of {candidates['users']} users scored (last "
                     f"{candidates['held_out_per_user']} watch(es) held out; {candidates['users_too_short']} had "
                     f"no earlier watch, {candidates['users_nothing_to_find']} nothing new to find).</p>"
                     + table(candidates["methods"], measures, "method"))
    return parts


def report_html(evaluation: dict, charts: dict[str, bytes], grids: Sequence[PosterRow],
                mix: Optional[PosterRow] = None, title: str = "Poster similarity: evaluation") -> str:
    """The whole page as a string (write it with `storage.write_bytes(uri, page.encode())`)."""
    inputs = evaluation.get("inputs", {})
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"muted\">model {html.escape(str(evaluation.get('model_version')))} · created "
             f"{html.escape(str(evaluation.get('created')))} · "
             + " · ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in inputs.items() if v) + "</p>",
             "<h2>Gates</h2>" + (_gates(evaluation) or "<p class=\"muted\">not checked</p>")]
    parts += _sections(evaluation)
    parts.append("<h2>Pictures</h2>")
    parts += [_figure(name, charts[name], caption) for name, caption in CHARTS if name in charts]
    if grids:
        parts.append("<h2>Similar posters</h2>" + poster_rows(grids))
    if mix:
        parts.append("<h2>Mix</h2>" + poster_rows([mix]))
    projector = evaluation.get("projector")
    if projector:
        parts.append(f"<h2>Embedding Projector</h2><p>{projector['points']} titles exported to "
                     f"<code>{html.escape(projector['directory'])}</code>: load <code>projector_config.json</code> "
                     "(vectors.tsv, metadata.tsv, sprite.png) at projector.tensorflow.org or in TensorBoard.</p>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
