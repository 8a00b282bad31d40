"""The papers' tables as markdown, from a reproduction's `Results`: one function per table of results.md."""

from typing import Iterable

import numpy as np

from nlr_tf.reproduce.results import AT_CAP, EXTRA_ROWS, MAIN_METRIC, ML, NR_ROWS, PREMISE_KEYS, SL, TABLES, Results
from nlr_tf.reproduce.rows import PREMISE_PAIRS
from nlr_tf.reproduce.statistics import test_text


def pct(f: float) -> str:
    """A clean fraction as a percentage: 0.05 -> "5 %"."""
    return f"{100 * f:g} %"


def cap_note(res: Results, cells: Iterable[tuple[str, str, float]]) -> str:
    """The footnote under a table: which of its cells are marked ‡, in how many seeds ("" if none)."""
    marked = res.at_cap_cells(cells)
    if not marked:
        return ""
    variants = len({c["variant"] for c in marked}) > 1

    def where(c: dict) -> str:
        fraction = "every fraction (trained once per seed)" if c["fraction"] is None else pct(c["fraction"])
        return c["label"] + (f" ({c['variant'].replace('_', '-')})" if variants else "") + f", {fraction}"

    return f"\n\n{AT_CAP} best validation at the step cap (still improving when its budget ended) in k of n seeds: " + (
        "; ".join(f"{where(c)}: {c['seeds_at_cap']} of {c['seeds']}" for c in marked) + "."
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _label(res: Results, variant: str, row: str, extra: bool = False) -> str:
    return res.labels[(variant, row)] + (" *(extra)*" if extra else "")


def metric_table(res: Results, variant: str, rows, metric: str, fractions, extras=()) -> str:
    """One row per method, one column per fraction: the metric, and the gap closed in parentheses."""
    header = ["Method"] + [f"{metric} {pct(f)} (gap closed)" for f in fractions]
    lines, shown = [], []
    for row in list(rows) + [r for r in extras if r not in rows]:
        if not res.has(variant, row):
            continue
        cells = []
        for f in fractions:
            value = res.cell(variant, row, f, metric)
            gap = res.gap_cell(variant, row, f, metric)
            cells.append(value if value == "–" else f"{value} ({gap})")
            shown.append((variant, row, f))
        lines.append([_label(res, variant, row, row in extras and row not in rows)] + cells)
    return _table(header, lines) + cap_note(res, shown)


def hu_table2(res: Results) -> str:
    rows = TABLES["hu_table2"][1]
    fr = res.fractions[ML]
    return "\n\n".join(
        [
            metric_table(res, ML, rows, "mAP", fr, EXTRA_ROWS[ML]),
            metric_table(res, ML, rows, "APall", fr, EXTRA_ROWS[ML]),
        ]
    )


def veit_table2(res: Results) -> str:
    rows = TABLES["veit_table2"][1]
    fr = res.fractions[ML]
    return "\n\n".join([metric_table(res, ML, rows, "APall", fr), metric_table(res, ML, rows, "mAP", fr)])


def hu_table4(res: Results, fraction: float) -> str:
    """Hu Table 4's rows in its order (#1-#7), then fine-tuning the noisy model, the upper bound and the extras."""
    data = {
        "noisy": "Noisy set",
        "clean_only": "Clean set",
        "cleannet": "Noisy set (weights from the clean set)",
        "cleannet_ft": "Clean set (from #3)",
        "forward": "Noisy set (T from the clean set)",
        "forward_ft": "Clean set (from #5)",
        "nr_sigmoid": "Noisy set, clean set",
        "ft_whole": "Clean set (from #1)",
        "gt": "Every training label verified",
        "forward_anchor": "Noisy set (T from #1's predictions; from #1)",
        "nr_sigmoid_from_noisy": "Noisy set, clean set (from #1)",
        "h_only_from_noisy": "Noisy set (from #1)",
        "g_only_from_noisy": "Clean set (from #1)",
    }
    rows, shown = [], []
    for i, (key, what) in enumerate(data.items(), 1):
        if res.has(SL, key, fraction):
            shown.append((SL, key, fraction))
            rows.append(
                [
                    str(i),
                    _label(res, SL, key, key in EXTRA_ROWS[SL]),
                    what,
                    res.cell(SL, key, fraction, "top1"),
                    res.gap_cell(SL, key, fraction, "top1"),
                ]
            )
    return _table(["#", "Method", "Data", "top-1", "gap closed"], rows) + cap_note(res, shown)


def hu_table5(res: Results, fraction: float) -> str:
    rows, shown = [], []
    names = {"noisy": None, "h_only": None, "g_only": None, "nr_sigmoid": "training g, h jointly", "gt": None}
    for key, name in names.items():
        label = name or res.labels.get((ML, key)) or res.labels.get((SL, key))
        if label is None:
            continue
        shown += [(ML, key, fraction), (SL, key, fraction)]
        rows.append(
            [
                label,
                res.cell(ML, key, fraction, "mAP"),
                res.cell(ML, key, fraction, "APall"),
                res.gap_cell(ML, key, fraction, "mAP"),
                res.cell(SL, key, fraction, "top1"),
                res.gap_cell(SL, key, fraction, "top1"),
            ]
        )
    header = ["Method", "multi-label mAP", "APall", "gap closed (mAP)", "single-label top-1", "gap closed (top-1)"]
    return _table(header, rows) + cap_note(res, shown)


def regime_table(res: Results, variant: str) -> str:
    """Gap closed per row and clean fraction (the regime map's numbers)."""
    metric = MAIN_METRIC[variant]
    fr = res.fractions[variant]
    def mean_gap(row: str) -> float:
        """The row's mean gap closed over the fractions that have one (rows without any last)."""
        gaps = [g for g in (res.gap_closed(variant, row, f, metric) for f in fr) if g is not None]
        return float(np.mean(gaps)) if gaps else -np.inf

    rows = sorted(
        {row for (v, row) in res.labels if v == variant and row not in ("noisy", "gt") and row not in PREMISE_KEYS},
        key=lambda r: -mean_gap(r),
    )
    lines, shown = [], []
    for row in rows:
        if sum(res.has(variant, row, f) for f in fr) < 2:
            continue
        cells = [res.gap_cell(variant, row, f, metric) + res._mark(variant, row, f) for f in fr]
        lines.append([res.labels[(variant, row)]] + cells)
        shown += [(variant, row, f) for f in fr]
    return _table(["Method"] + [pct(f) for f in fr], lines) + cap_note(res, shown)


# The papers' own methods and their non-whole-network baselines, per variant: what Noisy-FT-W is compared with.
PAPER_METHODS = {
    ML: ("ft_last", "ft_mixed", "lc_pretrained", "lc_joint", *NR_ROWS),
    SL: ("clean_only", "nr_sigmoid"),
}


def regime_findings(res: Results, variant: str) -> str:
    """In words: which row leads at each clean fraction, and where Noisy-FT-W overtakes the papers' methods."""
    metric = MAIN_METRIC[variant]
    lines = []
    leaders, margins = [], []
    for f in res.fractions[variant]:
        means = {r: res.mean(variant, r, f, metric) for r in PAPER_METHODS[variant] if res.has(variant, r, f)}
        means = {r: m for r, m in means.items() if m is not None}
        if not means:
            continue
        best = max(means, key=means.get)
        leaders.append(f"{pct(f)}: {res.labels[(variant, best)]} ({100 * means[best]:.2f})")
        whole = res.mean(variant, "ft_whole", f, metric)
        if whole is not None:
            margins.append((f, 100 * (whole - means[best])))
    if leaders:
        lines.append(
            f"- Leading {metric} among the papers' methods and baselines other than Noisy-FT-W, per clean fraction: "
            + "; ".join(leaders)
            + "."
        )
    if margins:
        above = [f for f, m in margins if m > 0]
        where = (
            "at every fraction"
            if len(above) == len(margins)
            else ("at no fraction" if not above else "at " + ", ".join(pct(f) for f in above))
        )
        lines.append(
            f"- Noisy-FT-W is above the best of them {where}: "
            + ", ".join(f"{m:+.2f} points at {pct(f)}" for f, m in margins)
            + "."
        )
    return "\n".join(lines)


def premise_table(res: Results, fraction: float) -> str:
    """Each premise row against its counterpart from the randomly initialized backbone (multi-label mAP).

    The difference column is the paired t-test of rotation-pretrained − random init, its verdict for the claim
    that the rotation-pretrained row is above."""
    lines, shown = [], []
    for rotated, base in PREMISE_PAIRS:
        if not res.has(ML, rotated, fraction):
            continue
        d = res.difference(ML, rotated, base, fraction, "mAP")
        shown += [(ML, base, fraction), (ML, rotated, fraction)]
        lines.append(
            [
                res.labels[(ML, base)],
                res.cell(ML, base, fraction, "mAP"),
                res.cell(ML, rotated, fraction, "mAP"),
                "–" if d is None else f"{test_text(d)}: {d['verdict']}",
            ]
        )
    header = ["Row", "random init", "rotation-pretrained", "rotation − random (paired t-test)"]
    return _table(header, lines) + cap_note(res, shown)
