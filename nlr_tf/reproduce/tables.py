"""The papers' tables from the runs' records: aggregation, checks, markdown, plots.

Each cell is the mean over seeds (± the standard deviation when there is
more than one seed). The "gap closed" column is the share of the distance
from the noisy baseline to the clean upper bound (`gt`, every training
label verified) that a row covers: (row − noisy) / (gt − noisy), on mAP for
multi-label data and top-1 for single-label data.
"""

import math
from collections import defaultdict
from typing import Any, Optional

import numpy as np

from nlr_tf.reproduce.plan import MULTI_LABEL_ABLATIONS, MULTI_LABEL_ROWS

ML, SL = "multi_label", "single_label"
BASELINES = ("noisy", "ft_whole", "ft_last", "ft_mixed", "lc_pretrained", "lc_joint")
NR_ROWS = ("nr_sigmoid", "nr_tanh", "nr_relu", "nr_sigmoid_whole")


class Results:
    """Mean and std over seeds of every (variant, row, fraction), shared rows at every fraction.

    Args:
        records: list of dict. One per run, as `runner.run_plan` returns.
    """

    def __init__(self, records: list[dict[str, Any]]):
        values = defaultdict(lambda: defaultdict(list))
        self.fractions = {ML: set(), SL: set()}
        for r in records:
            if r["fraction"] is not None:
                self.fractions[r["variant"]].add(r["fraction"])
        for r in records:
            fractions = [r["fraction"]] if r["fraction"] is not None else sorted(self.fractions[r["variant"]])
            for fraction in fractions:
                for metric in ("mAP", "APall", "top1"):
                    values[(r["variant"], r["row"], fraction)][metric].append(r[metric])
        self.values = values
        self.fractions = {k: sorted(v) for k, v in self.fractions.items()}
        self.seeds = sorted({r["seed"] for r in records})
        self.labels = {(r["variant"], r["row"]): r["label"] for r in records}
        self.curves = defaultdict(list)
        for r in records:
            if r.get("eval_history"):
                self.curves[(r["variant"], r["row"], r["fraction"])].append(r["eval_history"])

    def mean(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        v = self.values.get((variant, row, fraction), {}).get(metric)
        return float(np.mean(v)) if v else None

    def std(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        v = self.values.get((variant, row, fraction), {}).get(metric)
        return float(np.std(v)) if v else None

    def gap_closed(self, variant: str, row: str, fraction: float, metric: str) -> Optional[float]:
        noisy, gt, value = (self.mean(variant, r, fraction, metric) for r in ("noisy", "gt", row))
        if None in (noisy, gt, value) or gt <= noisy or math.isclose(gt, noisy):
            return None  # no gap to close: the upper bound is not above the noisy baseline
        return (value - noisy) / (gt - noisy)

    def cell(self, variant: str, row: str, fraction: float, metric: str) -> str:
        m = self.mean(variant, row, fraction, metric)
        if m is None:
            return "–"
        if len(self.values[(variant, row, fraction)][metric]) > 1:
            return f"{100 * m:.2f} ± {100 * self.std(variant, row, fraction, metric):.2f}"
        return f"{100 * m:.2f}"

    def gap_cell(self, variant: str, row: str, fraction: float, metric: str) -> str:
        if row in ("noisy", "gt"):
            return "0 %" if row == "noisy" else "100 %"
        g = self.gap_closed(variant, row, fraction, metric)
        return "–" if g is None else f"{100 * g:.0f} %"

    def as_dict(self) -> dict:
        out = []
        for (variant, row, fraction), metrics in sorted(self.values.items(), key=lambda kv: str(kv[0])):
            main = "mAP" if variant == ML else "top1"
            out.append(
                {
                    "variant": variant,
                    "row": row,
                    "label": self.labels[(variant, row)],
                    "fraction": fraction,
                    "seeds": len(metrics["mAP"]),
                    **{f"{m}_mean": self.mean(variant, row, fraction, m) for m in ("mAP", "APall", "top1")},
                    **{f"{m}_std": self.std(variant, row, fraction, m) for m in ("mAP", "APall", "top1")},
                    "gap_closed": self.gap_closed(variant, row, fraction, main),
                }
            )
        return {"seeds": self.seeds, "fractions": self.fractions, "cells": out}


def _pct(f: float) -> str:
    return f"{100 * f:g} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def hu_table2(res: Results) -> str:
    fr = res.fractions[ML]
    header = ["Method"] + [f"mAP {_pct(f)}" for f in fr] + [f"APall {_pct(f)}" for f in fr]
    header += [f"gap closed {_pct(f)}" for f in fr]
    rows = []
    for key in ["noisy"] + [r.key for r in MULTI_LABEL_ROWS] + ["gt"]:
        if (ML, key) not in res.labels:
            continue
        cells = [res.cell(ML, key, f, "mAP") for f in fr] + [res.cell(ML, key, f, "APall") for f in fr]
        rows.append([res.labels[(ML, key)]] + cells + [res.gap_cell(ML, key, f, "mAP") for f in fr])
    return _table(header, rows)


def hu_table4(res: Results) -> str:
    (fraction,) = res.fractions[SL] or [None]
    data = {
        "noisy": "Noisy set",
        "clean_only": "Clean set",
        "ft_whole": "Clean set (from #1)",
        "nr_sigmoid": "Noisy set, clean set",
        "gt": "Every training label verified",
    }
    rows = []
    for i, key in enumerate(data, 1):
        if (SL, key) in res.labels:
            rows.append(
                [
                    str(i),
                    res.labels[(SL, key)],
                    data[key],
                    res.cell(SL, key, fraction, "top1"),
                    res.gap_cell(SL, key, fraction, "top1"),
                ]
            )
    return _table(["#", "Method", "Data", "top-1", "gap closed"], rows)


def hu_table5(res: Results, ml_fraction: Optional[float]) -> str:
    sl_fraction = (res.fractions[SL] or [None])[0]
    rows = []
    names = {"noisy": None, "h_only": None, "g_only": None, "nr_sigmoid": "training g, h jointly"}
    for key, name in names.items():
        label = name or res.labels.get((ML, key)) or res.labels.get((SL, key))
        if label is None:
            continue
        rows.append(
            [
                label,
                res.cell(ML, key, ml_fraction, "mAP"),
                res.cell(ML, key, ml_fraction, "APall"),
                res.gap_cell(ML, key, ml_fraction, "mAP"),
                res.cell(SL, key, sl_fraction, "top1"),
                res.gap_cell(SL, key, sl_fraction, "top1"),
            ]
        )
    ml = _pct(ml_fraction) if ml_fraction is not None else "–"
    sl = _pct(sl_fraction) if sl_fraction is not None else "–"
    header = [
        "Method",
        f"multi-label mAP ({ml})",
        "APall",
        "gap closed (mAP)",
        f"single-label top-1 ({sl})",
        "gap closed (top-1)",
    ]
    return _table(header, rows)


def veit_table2(res: Results) -> str:
    fr = res.fractions[ML]
    names = {
        "noisy": "Baseline",
        "ft_mixed": "Fine-Tuning with mixed labels",
        "ft_last": "Fine-Tuning with clean labels",
        "lc_pretrained": "Our Approach with pre-training",
        "lc_joint": "Our Approach trained jointly",
    }
    header = ["Model"]
    for f in fr:
        header += [f"APall {_pct(f)}", f"MAP {_pct(f)}"]
    header += [f"gap closed {_pct(f)}" for f in fr]
    rows = []
    for key, name in names.items():
        if (ML, key) not in res.labels:
            continue
        cells = []
        for f in fr:
            cells += [res.cell(ML, key, f, "APall"), res.cell(ML, key, f, "mAP")]
        rows.append([name] + cells + [res.gap_cell(ML, key, f, "mAP") for f in fr])
    return _table(header, rows)


def checks(res: Results) -> list[dict[str, Any]]:
    """The expected outcomes, each with whether it held on these numbers."""
    out = []

    def add(claim: str, held: Optional[bool], detail: str) -> None:
        out.append({"claim": claim, "held": held, "detail": detail})

    fr = res.fractions[ML]
    if fr:
        for nr in NR_ROWS:
            misses = []
            for f in fr:
                value = res.mean(ML, nr, f, "mAP")
                above = [b for b in BASELINES if (res.mean(ML, b, f, "mAP") or -1.0) > (value or 0.0)]
                if value is not None and above:
                    best = max(above, key=lambda b: res.mean(ML, b, f, "mAP"))
                    misses.append(
                        f"{_pct(f)}: {100 * value:.2f} is below {', '.join(above)} "
                        f"(best {best} {100 * res.mean(ML, best, f, 'mAP'):.2f})"
                    )
            add(
                f"{nr} at or above every baseline in mAP at every clean fraction",
                not misses,
                "; ".join(misses) or "held everywhere",
            )
        for lc in ("lc_pretrained", "lc_joint"):
            misses = []
            for f in fr:
                value, other = res.mean(ML, lc, f, "mAP"), res.mean(ML, "ft_mixed", f, "mAP")
                if value is not None and other is not None and value < other:
                    misses.append(f"{_pct(f)}: {100 * value:.2f} < ft_mixed {100 * other:.2f}")
            add(f"{lc} at or above ft_mixed in mAP", not misses, "; ".join(misses) or "held everywhere")
        f = min(fr)
        gaps = {
            key: res.gap_closed(ML, key, f, "mAP") for key in [r.key for r in MULTI_LABEL_ROWS + MULTI_LABEL_ABLATIONS]
        }
        gaps = {k: g for k, g in gaps.items() if g is not None}
        claim = f"the best method closes at least half of the noisy-to-clean gap at {_pct(f)} clean"
        if gaps:
            best = max(gaps, key=gaps.get)
            add(claim, gaps[best] >= 0.5, f"best: {best}, {100 * gaps[best]:.0f} %")
        else:
            add(claim, None, "undetermined: the clean upper bound is not above the noisy baseline")
    if res.fractions[SL]:
        f = res.fractions[SL][0]
        nr, noisy, clean = (res.mean(SL, k, f, "top1") for k in ("nr_sigmoid", "noisy", "clean_only"))
        if None not in (nr, noisy, clean):
            add(
                "single-label: noise_regularization above both the noisy and the clean-only model in top-1",
                nr > noisy and nr > clean,
                f"nr_sigmoid {100 * nr:.2f}, noisy {100 * noisy:.2f}, clean-only {100 * clean:.2f}",
            )
    return out


def plot_map_vs_fraction(res: Results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fr = res.fractions[ML]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in [r.key for r in MULTI_LABEL_ROWS]:
        if (ML, key) not in res.labels:
            continue
        means = [100 * (res.mean(ML, key, f, "mAP") or np.nan) for f in fr]
        stds = [100 * (res.std(ML, key, f, "mAP") or 0.0) for f in fr]
        ax.errorbar([100 * f for f in fr], means, yerr=stds, marker="o", capsize=3, label=res.labels[(ML, key)])
    for key, style in (("noisy", ":"), ("gt", "--")):
        if (ML, key) in res.labels and fr:
            ax.axhline(100 * res.mean(ML, key, fr[0], "mAP"), color="k", linestyle=style, label=res.labels[(ML, key)])
    ax.set_xlabel("clean labels (% of training images)")
    ax.set_ylabel("test mAP (%)")
    ax.set_xticks([100 * f for f in fr])
    ax.set_title("digits_mosaic multi-label: mAP against clean fraction")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training_curves(res: Results, path: str) -> bool:
    """Validation mAP over training steps per activation (Hu Fig. 4); False if no run recorded a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {k: v for k, v in res.curves.items() if k[0] == ML}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for (variant, row, fraction), histories in sorted(curves.items()):
        steps = [e["step"] for e in histories[0]]
        values = np.array([[e["mAP"] for e in h] for h in histories if len(h) == len(steps)]) * 100
        ax.plot(steps, values.mean(axis=0), marker=".", label=f"{res.labels[(variant, row)]}, {_pct(fraction)} clean")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation mAP (%)")
    ax.set_title("Training curves per activation (Hu Fig. 4)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
