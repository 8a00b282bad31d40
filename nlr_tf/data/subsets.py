"""Nested, seeded, class-stratified subsets of a verified split (clean-label budgets, as Hu Table 3).

Every record gets a stratum: its rarest verified-positive class (rarest in
the split), or a stratum of its own kind when it has no verified positive
(partial verification is kept as it is: a record's unverified classes are
neither positive nor negative). Within each stratum the records are
shuffled and spaced evenly over [0, 1) from one random offset (systematic
sampling), and the split is ordered by that key: every prefix of the order
holds each stratum in proportion, to within one record. A budget of a
fraction f is the first round(f * N) records of the order, so a smaller
budget is always inside a larger one; `split_shares` cuts disjoint shares
(for example a val and a test set taken from a dataset's clean split) from
the end of the same kind of order, so each is stratified too.

A class with no verified positive in a subset is not an error here: the
caller reports it, and the metrics leave such a class out of the mean.
"""

from collections.abc import Sequence
from typing import Optional

import numpy as np

NO_POSITIVE = -1  # the stratum of records without a verified positive


def nested_split_name(fraction: float) -> str:
    """Split name of the clean set of a fraction: 0.05 -> `clean_05`, 0.25 -> `clean_25`, 1.0 -> `clean_100`."""
    return f"clean_{int(round(fraction * 100)):02d}"


def strata(labels: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """int [N]: each record's rarest verified-positive class, or NO_POSITIVE."""
    positive = np.asarray(labels) > 0
    if mask is not None:
        positive &= np.asarray(mask) > 0
    counts = positive.sum(0).astype(np.int64)
    d = positive.shape[1]
    # Rarest first; among equally rare classes the lower index, so the strata do not depend on the seed.
    rarity = np.where(positive, counts[None, :] * d + np.arange(d)[None, :], np.iinfo(np.int64).max)
    return np.where(positive.any(1), np.argmin(rarity, axis=1), NO_POSITIVE)


def stratified_order(labels: np.ndarray, mask: Optional[np.ndarray] = None, *, seed: int) -> np.ndarray:
    """int [N]: a seeded permutation of the records whose every prefix is stratified by class."""
    group = strata(labels, mask)
    rng = np.random.default_rng(seed)
    key = np.empty(len(group))
    for g in np.unique(group):
        members = rng.permutation(np.flatnonzero(group == g))
        key[members] = (np.arange(len(members)) + rng.random()) / len(members)
    tie_break = rng.random(len(group))  # records of different strata with equal keys: a seeded order too
    return np.lexsort((tie_break, key))


def subset_size(fraction: float, n: int) -> int:
    """Records in a budget of `fraction` of n (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a clean subset is a fraction in (0, 1], got {fraction:g}")
    return max(1, int(round(fraction * n)))


def nested_subsets(
    labels: np.ndarray, mask: Optional[np.ndarray], fractions: Sequence[float], *, seed: int
) -> dict[float, np.ndarray]:
    """For each fraction, the sorted indices of its subset; a smaller fraction's subset is inside a larger's."""
    order = stratified_order(labels, mask, seed=seed)
    return {f: np.sort(order[: subset_size(f, len(order))]) for f in fractions}


def split_shares(
    labels: np.ndarray, mask: Optional[np.ndarray], shares: Sequence[float], *, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Disjoint stratified shares set aside from a split, and the indices that remain.

    Returns:
        (rest, [indices of each share]), each sorted.
    """
    if sum(shares) >= 1 or any(s <= 0 for s in shares):
        raise ValueError(f"shares must be positive and sum to less than 1, got {list(shares)}")
    order = stratified_order(labels, mask, seed=seed)
    taken, end = [], len(order)
    for share in shares:
        size = subset_size(share, len(order))
        taken.append(np.sort(order[end - size : end]))
        end -= size
    if end <= 0:
        raise ValueError(f"{len(order)} records are too few for shares {list(shares)}")
    return np.sort(order[:end]), taken


def classes_without_positive(labels: np.ndarray, mask: Optional[np.ndarray], indices: np.ndarray) -> list[int]:
    """Classes with no verified positive among the records `indices`."""
    positive = np.asarray(labels)[indices] > 0
    if mask is not None:
        positive &= np.asarray(mask)[indices] > 0
    return np.flatnonzero(~positive.any(0)).tolist()
