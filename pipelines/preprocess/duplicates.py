"""Split groups: titles whose posters are byte-identical (sha256) or near-identical (difference hash within
`preprocess.near_duplicate_max_distance` bits) are linked, and linked titles form one group, split together.

    posters ─ Fingerprint ─┬─ by sha256 ────────────────▶ star links (each title → the key's smallest title)
                           ├─ by dhash ─────────────────▶ star links; one title per distinct dhash ─┐
                           │                    ┌───────────────────────────────────────────────────┘
                           │                    └ LSH bands (GroupByKey on band values) → pairs within the distance
                           └─ links ─▶ min-label propagation (`duplicate_group_rounds` rounds of one GroupByKey
                                     each) ─▶ (title_id, group_id): group_id = the group's smallest title_id

Nothing holds every title: each step groups by a key (a hash, a band value, a title), and a band value is
shared by ~0.6 distinct hashes at 10M titles (`pipelines.common.splits.LSH_BAND_BITS`); a poster repeated under
many titles (a placeholder) is one distinct dhash, linked as a star, never compared pair by pair.
"""
from __future__ import annotations

from itertools import combinations

import apache_beam as beam

from pipelines.common.splits import band_keys, band_positions, hamming, poster_dhash, split_of
from pipelines.config import PreprocessConfig

SOURCE, LABEL, SENT = "neighbours", "label", "sent"


def fingerprint(row, poster, hash_size: int | None) -> tuple[str, str, int | None]:
    """(title_id, sha256, dhash or None when near-duplicate grouping is off)."""
    return row.title_id, poster.sha256, None if hash_size is None else poster_dhash(poster.image_bytes, hash_size)


def star_links(titles) -> list[tuple[str, str]]:
    """Titles sharing a key → links from each to the smallest (n - 1 links, not n²)."""
    titles = sorted(set(titles))
    return [(titles[0], other) for other in titles[1:]]


def near_links(members, max_distance: int) -> list[tuple[str, str]]:
    """(title_id, dhash) sharing a band value → links between those within `max_distance` bits."""
    members = sorted(set(members))
    return [(a, b) for (a, ha), (b, hb) in combinations(members, 2) if hamming(ha, hb) <= max_distance]


def _group_rows(title_and_joined, eval_fraction: float):
    title_id, joined = title_and_joined
    for label in joined[LABEL]:
        for _, sha256, dhash in joined["print"]:
            yield {"title_id": title_id, "group_id": label, "image_sha256": sha256,
                   "dhash": None if dhash is None else format(dhash, "x"),
                   "split": split_of(title_id, eval_fraction, {title_id: label})}


def propagate(node_and_values, neighbour_tag: str = LABEL):
    """A title's smallest label (of those sent to it; its own id before the first round) to itself, as LABEL, and to
    each neighbour, tagged `neighbour_tag`: LABEL for a propagation round, SENT for the check after the last one.
    The values are (SOURCE, neighbour) and (LABEL, label) pairs, grouped by title."""
    node, values = node_and_values
    label = min((value for kind, value in values if kind == LABEL), default=node)
    yield node, (LABEL, label)
    for kind, neighbour in values:
        if kind == SOURCE:
            yield neighbour, (neighbour_tag, label)


def _unsettled_links(node_and_values):
    """A stat pair per label sent to a title that is smaller than the title's own."""
    _, values = node_and_values
    own = next(value for kind, value in values if kind == LABEL)
    for kind, label in values:
        if kind == SENT and label < own:
            yield ("unsettled_duplicate_links", ""), 1


class GroupDuplicatePosters(beam.PTransform):
    """(row, poster) → (`labels`: (title_id, group_id) of each title in a group of two or more,
    `groups`: rows of `contracts.DUPLICATE_GROUPS_SCHEMA`, `stats`: stat pairs)."""

    def __init__(self, config: PreprocessConfig):
        super().__init__()
        self._config = config

    def expand(self, posters):
        config = self._config
        near = config.near_duplicate_max_distance is not None
        hash_size = config.near_duplicate_hash_size if near else None
        prints = posters | "Fingerprint" >> beam.Map(lambda pair: fingerprint(*pair, hash_size))
        by_sha = (prints | "BySha256" >> beam.Map(lambda p: (p[1], p[0])) | "GroupSha256" >> beam.GroupByKey()
                  | "Sha256Links" >> beam.FlatMapTuple(lambda _, titles: star_links(titles)))
        link_sets = [by_sha]
        if near:
            link_sets += self._near_links(prints, hash_size, config.near_duplicate_max_distance)
        links = (link_sets | "AllLinks" >> beam.Flatten()
                 | "BothWays" >> beam.FlatMapTuple(lambda a, b: [(a, b), (b, a)]) | "UniqueLinks" >> beam.Distinct())
        # Each round is one GroupByKey of a title's neighbours and the labels sent to it (the smallest is taken
        # by the next round's `propagate`, and after the last by Smallest): the same labels as a CoGroupByKey
        # then a CombinePerKey(min) per round, in a third of the transforms and half the shuffles.
        neighbours = links | "TagNeighbours" >> beam.MapTuple(lambda a, b: (a, (SOURCE, b)))
        labels = links | "Titles" >> beam.Keys() | "UniqueTitles" >> beam.Distinct() \
            | "OwnLabel" >> beam.Map(lambda t: (t, (LABEL, t)))
        for round_number in range(config.duplicate_group_rounds):
            labels = ((neighbours, labels) | f"Send{round_number}" >> beam.Flatten()
                      | f"Join{round_number}" >> beam.GroupByKey()
                      | f"Propagate{round_number}" >> beam.FlatMap(propagate))
        labels = (labels | "Labels" >> beam.MapTuple(lambda t, sent: (t, sent[1]))
                  | "Smallest" >> beam.CombinePerKey(min))
        groups = ({"print": prints | "PrintByTitle" >> beam.Map(lambda p: (p[0], p)), LABEL: labels}
                  | "JoinPrints" >> beam.CoGroupByKey()
                  | "GroupRows" >> beam.FlatMap(_group_rows, config.eval_fraction))
        stats = ((labels | "TitleStats" >> beam.Map(lambda _: (("titles_in_duplicate_groups", ""), 1))),
                 (labels | "GroupIds" >> beam.Values() | "UniqueGroups" >> beam.Distinct()
                  | "GroupStats" >> beam.Map(lambda _: (("duplicate_groups", ""), 1))),
                 self._unsettled(neighbours, labels)) | "DuplicateStats" >> beam.Flatten()
        return labels, groups, stats

    @staticmethod
    def _unsettled(neighbours, labels):
        """One stat pair per link whose two titles still carry different labels after the rounds: each title sends
        its label to its neighbours (one more round's GroupByKey), and a title counts each label sent to it that
        is smaller than its own."""
        sent = ((neighbours, labels | "OwnFinalLabel" >> beam.MapTuple(lambda t, label: (t, (LABEL, label))))
                | "SendCheck" >> beam.Flatten() | "JoinCheck" >> beam.GroupByKey()
                | "SendLabel" >> beam.FlatMap(propagate, SENT))
        return sent | "JoinSent" >> beam.GroupByKey() | "Unsettled" >> beam.FlatMap(_unsettled_links)

    @staticmethod
    def _near_links(prints, hash_size: int, max_distance: int):
        bits = hash_size * hash_size
        positions = band_positions(bits)
        by_dhash = prints | "ByDhash" >> beam.Map(lambda p: (p[2], p[0])) | "GroupDhash" >> beam.GroupByKey()
        same_dhash = by_dhash | "DhashLinks" >> beam.FlatMapTuple(lambda _, titles: star_links(titles))
        banded = (by_dhash
                  | "OnePerDhash" >> beam.MapTuple(lambda dhash, titles: (min(titles), dhash))
                  | "BandKeys" >> beam.FlatMapTuple(
                      lambda title, dhash: [(key, (title, dhash)) for key in band_keys(dhash, positions, bits)])
                  | "GroupBands" >> beam.GroupByKey()
                  | "NearLinks" >> beam.FlatMapTuple(lambda _, members: near_links(members, max_distance)))
        return [same_dhash, banded]
