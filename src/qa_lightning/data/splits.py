"""Seeded splits of one examples dataset, and limits on the number of examples.

:func:`split_examples` shuffles with ``numpy.random.default_rng(seed)``, so the same seed gives
the same splits in every run and process. Splits are filled in the order ``sizes`` names them:

- ``by="example"``: the questions are shuffled and each split takes the next ``size`` of them;
- ``by="title"``: whole articles are shuffled, and each split is filled greedily with whole
  articles until it holds at least ``size`` questions. Sizes are therefore approximate: a split
  may overshoot by up to one article, so a later one may come up short (never empty). An article
  is every example with the same title, merged with any article sharing a context, so no
  context is ever in two splits; examples with an empty title are grouped by context alone.
  Within a split, articles come in shuffled order and their examples in dataset order.

Sizes are all counts (``int``) or all fractions of the dataset (``float``, summing to <= 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import numpy as np

SPLIT_BY = ("example", "title")


def split_examples(
    ds: datasets.Dataset,
    sizes: Mapping[str, int | float],
    *,
    seed: int,
    by: str = "example",
) -> datasets.DatasetDict:
    """Carve named splits out of ``ds`` by a seeded shuffle of examples or of article titles."""
    if by not in SPLIT_BY:
        raise ValueError(f"by must be one of {SPLIT_BY}, got {by!r}")
    counts = resolve_sizes(sizes, len(ds))
    rng = np.random.default_rng(seed)
    if by == "example":
        indices = _split_examples(rng.permutation(len(ds)).tolist(), counts)
    else:
        indices = _split_articles(_article_groups(ds), rng, counts)
    return datasets.DatasetDict({name: ds.select(rows) for name, rows in indices.items()})


def limit_examples(ds: datasets.Dataset, max_examples: int | None) -> datasets.Dataset:
    """The first ``max_examples`` examples of ``ds`` (all of them when ``None``)."""
    if max_examples is None:
        return ds
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 0:
        raise ValueError(
            f"max_examples must be a non-negative integer or None, got {max_examples!r}"
        )
    return ds if max_examples >= len(ds) else ds.select(range(max_examples))


def resolve_sizes(sizes: Mapping[str, int | float], total: int) -> dict[str, int]:
    """Split sizes as counts of examples, checked against the ``total`` available."""
    if not sizes:
        raise ValueError("sizes must name at least one split")
    values = list(sizes.values())
    if any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in values):
        raise ValueError(f"split sizes must be non-negative numbers, got {dict(sizes)}")
    if all(isinstance(v, int) for v in values):
        counts = {name: int(size) for name, size in sizes.items()}
    elif all(isinstance(v, float) for v in values):
        counts = _fractions_to_counts(sizes, total)
    else:
        raise ValueError(f"split sizes must be all counts or all fractions, got {dict(sizes)}")
    if sum(counts.values()) > total:
        raise ValueError(
            f"the requested splits {counts} need {sum(counts.values()):,} examples "
            f"but the dataset has only {total:,}"
        )
    return counts


def _fractions_to_counts(sizes: Mapping[str, float], total: int) -> dict[str, int]:
    if sum(sizes.values()) > 1 + 1e-9:
        raise ValueError(f"split fractions must sum to at most 1, got {dict(sizes)}")
    counts, cumulative, boundary = {}, 0.0, 0
    for name, fraction in sizes.items():
        cumulative += fraction
        end = min(round(cumulative * total), total)
        counts[name], boundary = end - boundary, end
    return counts


def _split_examples(order: list[int], counts: dict[str, int]) -> dict[str, list[int]]:
    splits, start = {}, 0
    for name, count in counts.items():
        splits[name], start = order[start : start + count], start + count
    return splits


def _article_groups(ds: datasets.Dataset) -> list[list[int]]:
    """Row indices grouped by article, in order of first appearance (see the module doc)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(key: tuple[str, str]) -> tuple[str, str]:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    titles, contexts = list(ds["title"]), list(ds["context"])
    for title, context in zip(titles, contexts, strict=True):
        if title:
            parent[find(("title", title))] = find(("context", context))
    groups: dict[tuple[str, str], list[int]] = {}
    for row, context in enumerate(contexts):
        groups.setdefault(find(("context", context)), []).append(row)
    return list(groups.values())


def _split_articles(
    groups: list[list[int]], rng: np.random.Generator, counts: dict[str, int]
) -> dict[str, list[int]]:
    order = iter(rng.permutation(len(groups)).tolist())
    splits = {}
    for name, count in counts.items():
        rows: list[int] = []
        while len(rows) < count and (group := next(order, None)) is not None:
            rows.extend(groups[group])
        if count and not rows:
            raise ValueError(
                f"no whole article is left for split {name!r}: the splits before it took "
                f"all {len(groups):,} articles; ask for smaller splits"
            )
        splits[name] = rows
    return splits
