"""The plots of results.md: the regime map and the training curves."""

from matplotlib.figure import Figure

from nlr_tf.evaluation import plotting
from nlr_tf.reproduce.markdown import pct
from nlr_tf.reproduce.results import MAIN_METRIC, ML, PREMISE_KEYS, SL, Results


def plot_regime_map(res: Results, path: str) -> None:
    """Multi-label mAP and single-label top-1 against the clean fraction, per row (log-scaled fraction axis)."""
    variants = [v for v in (ML, SL) if res.fractions[v]]
    fig = Figure(figsize=(11 * len(variants), 5.5), dpi=110)
    axes = fig.subplots(1, len(variants), squeeze=False)
    for ax, variant in zip(axes[0], variants):
        metric = MAIN_METRIC[variant]
        fr = res.fractions[variant]
        rows = [
            (row, label)
            for (v, row), label in sorted(res.labels.items())
            if v == variant and row not in ("noisy", "gt") and row not in PREMISE_KEYS
        ]
        for i, (row, label) in enumerate(rows):
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
        ax.set_xticks([100 * f for f in fr], [f"{100 * f:g}" for f in fr])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("clean labels (% of training images)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.set_title(f"digits_mosaic {variant.replace('_', '-')}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
