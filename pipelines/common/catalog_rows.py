"""Row-level validation of a catalog, shared by every pipeline that reads one (preprocess, embed).

CatalogRow → rows that may go on + reject records: what the reader found (a malformed manifest line, a poster
outside the allowed roots), a missing title_id, duplicate title_ids (by the
`preprocess.duplicate_title_policy`), no genres. Posters are checked afterwards by `images.ReadAndValidatePosters`.
"""
from __future__ import annotations

import apache_beam as beam

from pipelines.common.catalog import CatalogRow
from pipelines.common.posters import reject_record
from pipelines.contracts import RejectReason


def resolve_duplicates(rows: list[CatalogRow], policy: str) -> tuple[CatalogRow | None, list[tuple[CatalogRow, str]]]:
    """All rows of one title_id → (the row kept or None, [(rejected row, detail)]).

    `reject`: a title_id on several rows rejects all of them (which one is right cannot be told);
    `keep_last`: the row furthest down the manifest wins and the earlier ones are rejected as superseded.
    """
    rows = sorted(rows, key=lambda row: row.row_number)
    if len(rows) == 1:
        return rows[0], []
    numbers = ", ".join(str(row.row_number) for row in rows)
    if policy == "keep_last":
        last = rows[-1]
        detail = f"superseded by row {last.row_number} (preprocess.duplicate_title_policy=keep_last)"
        return last, [(row, detail) for row in rows[:-1]]
    return None, [(row, f"title_id is on rows {numbers} (preprocess.duplicate_title_policy=reject)")
                  for row in rows]


class ValidateCatalogRows(beam.PTransform):
    """CatalogRow → (rows that may go on, reject records): the reader's problems, missing title_id, duplicates by
    policy, no genres."""

    def __init__(self, duplicate_title_policy: str):
        super().__init__()
        self._policy = duplicate_title_policy

    def expand(self, rows):
        with_id = rows | "CheckTitleId" >> beam.ParDo(_check_row).with_outputs("rejects", main="rows")
        # Duplicates meet in a group by title_id (a shuffle), never in a list of the whole catalog.
        unique = (with_id.rows
                  | "KeyByTitleId" >> beam.Map(lambda row: (row.title_id, row))
                  | "GroupByTitleId" >> beam.GroupByKey()
                  | "ResolveDuplicates" >> beam.ParDo(_resolved, self._policy).with_outputs("rejects", main="rows"))
        with_genres = unique.rows | "CheckGenres" >> beam.ParDo(_check_genres).with_outputs("rejects", main="rows")
        rejects = ((with_id.rejects, unique.rejects, with_genres.rejects)
                   | "CatalogRejects" >> beam.Flatten())
        return with_genres.rows, rejects


def _check_row(row: CatalogRow):
    if row.problem is not None:
        reason, detail = row.problem
        yield beam.pvalue.TaggedOutput("rejects", reject_record(row.title_id, row.poster_uri, reason, detail,
                                                                row.lines))
    elif row.title_id is None:
        yield beam.pvalue.TaggedOutput("rejects", reject_record(
            None, row.poster_uri, RejectReason.MISSING_TITLE_ID, f"row {row.row_number} has no title_id", row.lines))
    else:
        yield row


def _resolved(item: tuple[str, list[CatalogRow]], policy: str):
    kept, rejected = resolve_duplicates(list(item[1]), policy)
    for row, detail in rejected:
        yield beam.pvalue.TaggedOutput("rejects", reject_record(
            row.title_id, row.poster_uri, RejectReason.DUPLICATE_TITLE_ID, f"row {row.row_number}: {detail}",
            row.lines))
    if kept is not None:
        yield kept


def _check_genres(row: CatalogRow):
    if not row.genres:
        yield beam.pvalue.TaggedOutput("rejects", reject_record(
            row.title_id, row.poster_uri, RejectReason.NO_GENRES, f"row {row.row_number} lists no genres",
            row.lines))
    else:
        yield row
