"""The plots of results.md: the regime map and the training curves."""

from matplotlib.figure import Figure

from nlr_tf.evaluation import plotting
from nlr_tf.reproduce.markdown import pct
from nlr_tf.reproduce.results import MAIN_METRIC, ML, PREMISE_KEYS, SL, Results

# The rows a reader compares on the regime map, in legend order; the others are in results.md's tables. At most
# MAX_LINES per panel, so every line keeps its own colour and marker.
MAP_ROWS = {
    ML: ("ft_whole", "ft_last", "ft_mixed", "lc_pretrained", "lc_joint", "nr_sigmoid", "g_only", "logreg_clean"),
    SL: ("clean_only", "ft_whole", "nr_sigmoid", "g_only", "h_only", "cleannet", "cleannet_ft", "forward"),
}
MAX_LINES = 8


def map_rows(res: Results, variant: str, first=()) -> list[tuple[str, str]]:
    """(row, label) of the lines drawn for a variant: the compared rows that have two fractions or more, the rows
    `first` names (nlr-compare's leaders) before the others."""

    def drawable(row):
        return sum(res.mean(variant, row, f, MAIN_METRIC[variant]) is not None for f in res.fractions[variant]) >= 2

    candidates = [
        row
        for (v, row) in sorted(res.labels)
        if v == variant and row not in ("noisy", "gt") and row not in PREMISE_KEYS and drawable(row)
    ]
    order = MAP_ROWS.get(variant, ())
    chosen = [r for r in order if r in candidates] or candidates
    chosen = list(dict.fromkeys([r for r in first if r in candidates] + chosen))
    return [(row, res.labels[(variant, row)]) for row in chosen[:MAX_LINES]]


def plot_regime_map(res: Results, path: str, budget_images=None, first=()) -> None:
    """Multi-label mAP and single-label top-1 against the clean fraction (log-scaled axis), one panel per variant,
    at most MAX_LINES rows each (map_rows, `first` first) besides the noisy and GT lines.

    Args:
        budget_images: dict of fraction to clean images, or None. nlr-compare's budgets (shares of a user's
            clean split): the axis counts clean images.
    """
    variants = [v for v in (ML, SL) if res.fractions[v]]
    fig = Figure(figsize=(7.5 * len(variants), 5.0), dpi=110)
    axes = fig.subplots(1, len(variants), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        metric = MAIN_METRIC[variant]
        fr = res.fractions[variant]
        for i, (row, label) in enumerate(map_rows(res, variant, first)):
            points = [(f, res.mean(variant, row, f, metric), res.std(variant, row, f, metric)) for f in fr]
            points = [p for p in points if p[1] is not None]
            if len(points) < 2:
                continue
            x, m, s = zip(*points)
            ax.errorbar(
                [100 * f for f in x],
                [100 * v for v in m],
                yerr=[0.0 if v is None else 100 * v for v in s],  # one seed: no spread
                capsize=3,
                **plotting.series_style(i),
                label=label,
            )
        for row, style in (("noisy", ":"), ("gt", "--")):
            if res.has(variant, row) and fr:
                ax.axhline(
                    100 * res.mean(variant, row, fr[0], metric),
                    color="k",
                    linestyle=style,
                    label=res.labels[(variant, row)],
                )
        ax.set_xscale("log")
        ax.set_xticks([], minor=True)
        if budget_images:
            ax.set_xticks([100 * f for f in fr], [f"{budget_images[f]:,}\n({100 * f:g} %)" for f in fr])
            ax.set_xlabel("clean images (share of the clean set)")
        else:
            ax.set_xticks([100 * f for f in fr], [f"{100 * f:g}" for f in fr])
            ax.set_xlabel("clean labels (% of training images)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(f"{variant.replace('_', '-')} (the other rows: results.md)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(alpha=0.3)
    plotting.save_figure(fig, path)


def plot_training_curves(res: Results, path: str) -> bool:
    """Validation mAP over training steps per activation (Hu Fig. 4); False if no run recorded a curve."""
    fr = res.fractions[ML]
    fraction = 0.05 if 0.05 in fr else (fr[0] if fr else None)
    curves = {k: v for k, v in res.curves.items() if k[0] == ML and k[2] == fraction}
    if not curves:
        return False
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.subplots()
    for (variant, row, f), histories in sorted(curves.items()):
        h = histories[0]  # the first seed: runs stop at different steps
        ax.plot([e["step"] for e in h], [100 * e["mAP"] for e in h], marker=".", label=f"{res.labels[(variant, row)]}")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation mAP (%)")
    ax.set_title(f"Training curves per activation, {pct(fraction)} clean (Hu Fig. 4)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    plotting.save_figure(fig, path)
    return True
