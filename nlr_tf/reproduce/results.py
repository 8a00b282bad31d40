"""The runs' records aggregated over seeds: each table cell's mean, spread, step-cap mark and gap closed.

Each cell is the mean over seeds, ± the sample standard deviation over seeds
(ddof=1) when there is more than one seed; a cell whose run, in some seed,
had its best validation evaluation at its step cap (still improving when
its budget ended) is marked ‡. The "gap closed" is the share of the distance
from the noisy baseline to the clean upper bound (`gt`, every training label
verified) that a row covers: (row − noisy) / (gt − noisy), on mAP for
multi-label data and top-1 for single-label data. `rank_agreement` compares
the row order of each table between two reproductions.
"""

import math
from collections import defaultdict
from typing import Any, Iterable, Optional

import numpy as np

from nlr_tf.reproduce.rows import NR_ACTIVATIONS, PREMISE_ROWS
from nlr_tf.reproduce.statistics import cell_verdict, paired_t_test

ML, SL = "multi_label", "single_label"
MAIN_METRIC = {ML: "mAP", SL: "top1"}
NR_ROWS = tuple(f"nr_{a}" for a in NR_ACTIVATIONS)

# Each table: its variant, its rows in the papers' order, and the metric its row order is judged by.
TABLES = {
    "hu_table2": (ML, ("noisy", "ft_whole", "ft_last", "ft_mixed", "lc_pretrained", "lc_joint", *NR_ROWS, "gt"), "mAP"),
    "veit_table2": (
        ML,
        ("noisy", "misra_visual", "misra_relevance", "ft_mixed", "ft_last", "lc_pretrained", "lc_joint"),
        "APall",
    ),
    "hu_table4": (
        SL,
        ("noisy", "clean_only", "cleannet", "cleannet_ft", "forward", "forward_ft", "nr_sigmoid", "ft_whole", "gt"),
        "top1",
    ),
    "hu_table5_ml": (ML, ("noisy", "h_only", "g_only", "nr_sigmoid", "gt"), "mAP"),
    "hu_table5_sl": (SL, ("noisy", "h_only", "g_only", "nr_sigmoid", "gt"), "top1"),
}
PREMISE_KEYS = frozenset(r.key for r in PREMISE_ROWS)
# Rows a table shows below its own, marked as extra (Hu Table 2 gains the rows from other works).
BASELINE_ROWS = ("misra_visual", "misra_relevance", "forward", "forward_anchor", "cleannet", "confident_learning")
EXTRA_ROWS = {
    ML: ("logreg_clean", "logreg_noisy", "h_only", "g_only", "nr_sigmoid_whole", *BASELINE_ROWS),
    SL: ("forward_anchor", "nr_sigmoid_from_noisy", "h_only_from_noisy", "g_only_from_noisy"),
}


AT_CAP = "‡"  # after a cell whose run had its best validation at its step cap, in some seed


class Results:
    """Per-seed values of every (variant, row, fraction); shared rows count at every fraction.

    Args:
        records: list of dict. One per table cell, as `runner.run_plan` returns.
    """

    def __init__(self, records: list[dict[str, Any]]):
        self.fractions = {ML: set(), SL: set()}
        for r in records:
            if r["fraction"] is not None:
                self.fractions[r["variant"]].add(r["fraction"])
        self.fractions = {k: sorted(v) for k, v in self.fractions.items()}
        # (variant, row, fraction) -> metric -> seed -> value
        self.values = defaultdict(lambda: defaultdict(dict))
        # (variant, row, fraction) -> seed -> whether the run's best validation was at its step cap
        # (trained runs whose record says their cap; reference rows have none).
        self.caps = defaultdict(dict)
        for r in records:
            fractions = [r["fraction"]] if r["fraction"] is not None else self.fractions[r["variant"]]
            for fraction in fractions:
                for metric in ("mAP", "APall", "top1"):
                    self.values[(r["variant"], r["row"], fraction)][metric][r["seed"]] = r[metric]
                if r.get("max_steps") is not None and r.get("best_step") is not None:
                    self.caps[(r["variant"], r["row"], fraction)][r["seed"]] = r["best_step"] >= r["max_steps"]
        self.seeds = sorted({r["seed"] for r in records})
        self.labels = {(r["variant"], r["row"]): r["label"] for r in records}
        self.shared = {(r["variant"], r["row"]) for r in records if r["fraction"] is None}
        self.curves = defaultdict(list)
        for r in records:
            if r.get("eval_history") and r["row"] in NR_ROWS:
                self.curves[(r["variant"], r["row"], r["fraction"])].append(r["eval_history"])

    def has(self, variant: str, row: str, fraction: Optional[float] = None) -> bool:
        if fraction is None:
            return (variant, row) in self.labels
        return bool(self.values.get((variant, row, fraction)))

    def per_seed(self, variant: str, row: str, fraction: float, metric: str) -> dict[int, float]:
        return dict(self.values.get((variant, row, fraction), {}).get(metric, {}))

    def mean(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        v = list(self.per_seed(variant, row, fraction, metric).values())
        return float(np.mean(v)) if v else None

    def std(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        """The sample standard deviation over seeds (ddof=1); None for fewer than two seeds."""
        v = list(self.per_seed(variant, row, fraction, metric).values())
        return float(np.std(v, ddof=1)) if len(v) > 1 else None

    def at_cap(self, variant: str, row: str, fraction: float) -> tuple[int, int]:
        """(seeds whose run had its best validation at its step cap, seeds whose run has a step cap)."""
        caps = self.caps.get((variant, row, fraction), {})
        return sum(caps.values()), len(caps)

    def gap_closed(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        noisy, gt, value = (self.mean(variant, r, fraction, metric) for r in ("noisy", "gt", row))
        if None in (noisy, gt, value) or gt <= noisy or math.isclose(gt, noisy):
            return None  # no gap to close: the upper bound is not above the baseline
        return (value - noisy) / (gt - noisy)

    def difference(
        self, variant: str, a: str, b: str, fraction: float, metric: str, margin: float = 0.0
    ) -> Optional[dict[str, Any]]:
        """The paired t-test (`paired_t_test`) of a − b over the seeds both rows have, with its verdict for the
        claim a − b > −margin (`cell_verdict`); None if no seed has both."""
        va, vb = self.per_seed(variant, a, fraction, metric), self.per_seed(variant, b, fraction, metric)
        seeds = sorted(set(va) & set(vb))
        if not seeds:
            return None
        test = paired_t_test([va[s] - vb[s] for s in seeds], margin)
        return {**test, "verdict": cell_verdict(test)}

    def _mark(self, variant: str, row: str, fraction: float) -> str:
        return AT_CAP if self.at_cap(variant, row, fraction)[0] else ""

    def cell(self, variant: str, row: str, fraction: float, metric: str) -> str:
        """mean ± sample std (%, each rounded once from its full-precision value), ‡ if at the step cap."""
        m = self.mean(variant, row, fraction, metric)
        if m is None:
            return "–"
        s = self.std(variant, row, fraction, metric)
        text = f"{100 * m:.2f}" if s is None else f"{100 * m:.2f} ± {100 * s:.2f}"
        return text + self._mark(variant, row, fraction)

    def gap_cell(self, variant: str, row: str, fraction: float, metric: str) -> str:
        if row in ("noisy", "gt"):
            return "0 %" if row == "noisy" else "100 %"
        g = self.gap_closed(variant, row, fraction, metric)
        return "–" if g is None else f"{100 * g:.0f} %"

    def at_cap_cells(self, cells: Optional[Iterable[tuple[str, str, float]]] = None) -> list[dict[str, Any]]:
        """The cells marked ‡ (among `cells`, default every cell): a shared row once, with fraction None."""
        out, seen = [], set()
        for variant, row, fraction in sorted(self.caps, key=str) if cells is None else cells:
            k, n = self.at_cap(variant, row, fraction)
            shared = (variant, row) in self.shared
            key = (variant, row, None if shared else fraction)
            if k and key not in seen:
                seen.add(key)
                out.append(
                    {
                        "variant": variant,
                        "row": row,
                        "label": self.labels[(variant, row)],
                        "fraction": key[2],
                        "seeds_at_cap": k,
                        "seeds": n,
                    }
                )
        return out

    def as_dict(self) -> dict:
        out = []
        for (variant, row, fraction), metrics in sorted(self.values.items(), key=lambda kv: str(kv[0])):
            k, n = self.at_cap(variant, row, fraction)
            out.append(
                {
                    "variant": variant,
                    "row": row,
                    "label": self.labels[(variant, row)],
                    "fraction": fraction,
                    "seeds": len(metrics["mAP"]),
                    **{f"{m}_mean": self.mean(variant, row, fraction, m) for m in ("mAP", "APall", "top1")},
                    **{f"{m}_std": self.std(variant, row, fraction, m) for m in ("mAP", "APall", "top1")},
                    "gap_closed": self.gap_closed(variant, row, fraction, MAIN_METRIC[variant]),
                    "seeds_at_cap": k if n else None,
                }
            )
        return {
            "seeds": self.seeds,
            "fractions": self.fractions,
            "std": "sample standard deviation over seeds (ddof=1); None for one seed",
            "cells": out,
            "at_cap": self.at_cap_cells(),
        }


# === Row order agreement between two reproductions ===
def row_means(res: Results, table: str) -> dict[str, float]:
    """Each row's metric in `table`, averaged over the fractions the run has."""
    variant, rows, metric = TABLES[table]
    out = {}
    for row in rows:
        values = [res.mean(variant, row, f, metric) for f in res.fractions[variant]]
        values = [v for v in values if v is not None]
        if values:
            out[row] = float(np.mean(values))
    return out


def rank_agreement(res: Results, reference: Results) -> dict[str, Optional[float]]:
    """Spearman's rank correlation of each table's row order between two reproductions, at their common fractions."""
    from scipy.stats import spearmanr

    out = {}
    for table, (variant, _, _) in TABLES.items():
        common = sorted(set(res.fractions[variant]) & set(reference.fractions[variant]))
        a, b = (_restricted(r, variant, common) for r in (res, reference))
        mine, theirs = row_means(a, table), row_means(b, table)
        rows = [r for r in mine if r in theirs]
        out[table] = float(spearmanr([mine[r] for r in rows], [theirs[r] for r in rows])[0]) if len(rows) > 2 else None
    return out


def _restricted(res: Results, variant: str, fractions: list[float]) -> Results:
    copy = Results([])
    copy.values, copy.labels = res.values, res.labels
    copy.fractions = {**res.fractions, variant: fractions}
    return copy
