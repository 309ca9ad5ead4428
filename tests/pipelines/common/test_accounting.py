"""A run's counts: stat pairs summed into stats, the accounting identity, and the error budget with its keep_last
exemption — the part preprocess and embed share."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from pipelines.common.accounting import (
    CountStats,
    ErrorBudgetExceeded,
    budget_figures,
    check_accounting,
    check_error_budget,
    manifest_line_stats,
    reject_stats,
    stats_from_counts,
    top_reasons,
    write_stats_and_check_budget,
)
from pipelines.common.catalog import ManifestLines
from pipelines.contracts import STATS_FILE, RejectReason

SECTIONS = {"accepted": 0, "genre_counts": {}}


def budget_stats(rejected, read=10, superseded=0, max_reject_fraction=0.2):
    return {"read": read, "rejected": rejected, "duplicate_titles_kept_last": superseded,
            "max_reject_fraction": max_reject_fraction,
            "rejected_by_reason": {"zero_bytes": 1, "unreadable": rejected - 1}}


def test_counts_fill_the_sections_and_keep_empty_ones():
    stats = stats_from_counts([(("read", ""), 4), (("accepted", ""), 3), (("rejected", ""), 1),
                               (("rejected_by_reason", "zero_bytes"), 1), (("converted_to_rgb", "L"), 2)], SECTIONS)
    assert stats == {"read": 4, "accepted": 3, "rejected": 1, "rejected_by_reason": {"zero_bytes": 1},
                     "genre_counts": {}, "converted_to_rgb": {"L": 2},
                     "lines": {"total": 0, "header": 0, "blank": 0, "accepted": 0, "rejected": 0}}
    assert SECTIONS == {"accepted": 0, "genre_counts": {}}  # the defaults are copied, never filled in


def test_count_stats_sums_the_pairs_of_every_branch_into_one_json_file(tmp_path):
    uri = str(tmp_path / "counts.json")
    rejects = [{"reason": RejectReason.ZERO_BYTES, "lines": 1}, {"reason": RejectReason.UNREADABLE, "lines": 2},
               {"reason": RejectReason.ZERO_BYTES, "lines": 1}]
    with BeamTestPipeline() as pipeline:
        read = pipeline | "Rows" >> beam.Create(range(5)) | "Read" >> beam.Map(lambda _: (("read", ""), 1))
        accepted = pipeline | "Accepted" >> beam.Create([(("accepted", ""), 1), (("lines", "accepted"), 1)] * 2)
        rejected = pipeline | "Rejects" >> beam.Create(rejects) | "RejectStats" >> beam.FlatMap(reject_stats)
        lines = (pipeline | "Manifest" >> beam.Create([ManifestLines(total=9, header=1, blank=2)])
                 | "LineStats" >> beam.FlatMap(manifest_line_stats))
        _ = (read, accepted, rejected, lines) | beam.Flatten() | CountStats(uri, SECTIONS)
    stats = json.loads(open(uri).read())
    assert stats == {"read": 5, "accepted": 2, "rejected": 3, "genre_counts": {},
                     "rejected_by_reason": {RejectReason.ZERO_BYTES: 2, RejectReason.UNREADABLE: 1},
                     "lines": {"total": 9, "header": 1, "blank": 2, "accepted": 2, "rejected": 4}}
    check_accounting(stats, ("accepted",))


def test_broken_line_accounting_names_every_term():
    """A manifest line in neither the output nor rejects/ (what an unbalanced quote used to do) fails the run."""
    stats = {"read": 53, "accepted": 53, "rejected": 0,
             "lines": {"total": 61, "header": 1, "blank": 0, "accepted": 53, "rejected": 0}}
    with pytest.raises(RuntimeError, match=r"manifest lines header 1 \+ blank 0 \+ accepted 53 \+ rejected 0 "
                                           r"!= total 61"):
        check_accounting(stats, ("accepted",))


def test_accounting_holds_when_accepted_plus_rejected_is_read():
    stats = {"read": 7, "new": 3, "changed": 1, "unchanged": 2, "rejected": 1}
    check_accounting(stats, ("new", "changed", "unchanged"))


def test_broken_accounting_names_every_term():
    with pytest.raises(RuntimeError, match=r"accounting broken: new 3 \+ changed 1 \+ rejected 1 != read 6"):
        check_accounting({"read": 6, "new": 3, "changed": 1, "rejected": 1}, ("new", "changed"))


def test_the_error_budget_names_the_top_reasons():
    with pytest.raises(ErrorBudgetExceeded, match=r"3 of 10 rows rejected \(30.0%\), more than "
                                                  r"preprocess.max_reject_fraction=20.0%; "
                                                  r"top reasons: unreadable 2, zero_bytes 1$"):
        check_error_budget(budget_stats(3), "preprocess.max_reject_fraction")
    check_error_budget(budget_stats(2), "preprocess.max_reject_fraction")


def test_the_budget_names_at_most_three_reasons_most_common_first_in_the_unit_read():
    stats = dict(budget_stats(9), rejected_by_reason={"a": 1, "b": 3, "c": 2, "d": 3})
    assert top_reasons(stats) == "b 3, d 3, c 2, a 1"
    with pytest.raises(ErrorBudgetExceeded, match=r"9 of 10 titles rejected .*embed.max_reject_fraction=20.0%; "
                                                  r"top reasons: b 3, d 3, c 2$"):
        check_error_budget(stats, "embed.max_reject_fraction", unit="titles")


def test_an_empty_catalog_is_over_budget():
    with pytest.raises(ErrorBudgetExceeded, match="the catalog has no rows"):
        check_error_budget(budget_stats(0, read=0), "embed.max_reject_fraction")


@pytest.mark.parametrize("policy, superseded", [("keep_last", 4), ("reject", 0)])
def test_only_keep_last_duplicates_count_as_superseded(policy, superseded):
    stats = {"read": 10, "rejected": 5, "rejected_by_reason": {RejectReason.DUPLICATE_TITLE_ID: 4, "zero_bytes": 1}}
    assert budget_figures(stats, policy, 0.2) == {"duplicate_titles_kept_last": superseded, "reject_fraction": 0.5,
                                                  "max_reject_fraction": 0.2}


def test_rows_superseded_under_keep_last_are_not_errors():
    stats = {"read": 10, "rejected": 5, "rejected_by_reason": {RejectReason.DUPLICATE_TITLE_ID: 4, "zero_bytes": 1}}
    check_error_budget({**stats, **budget_figures(stats, "keep_last", 0.2)}, "embed.max_reject_fraction")
    with pytest.raises(ErrorBudgetExceeded, match="5 of 10 rows rejected"):
        check_error_budget({**stats, **budget_figures(stats, "reject", 0.2)}, "embed.max_reject_fraction")


def test_a_run_over_budget_keeps_its_stats_in_staging_and_says_nothing_was_published(tmp_path):
    staging, out = str(tmp_path / ".staging-out"), str(tmp_path / "out")
    with pytest.raises(ErrorBudgetExceeded, match=r"Nothing was published to .*out; this run's rejects and stats "
                                                  r"are in .*\.staging-out$"):
        write_stats_and_check_budget(budget_stats(3), staging, out, "preprocess.max_reject_fraction")
    assert json.loads((tmp_path / ".staging-out" / STATS_FILE).read_text())["rejected"] == 3
    write_stats_and_check_budget(budget_stats(1), staging, out, "preprocess.max_reject_fraction")
