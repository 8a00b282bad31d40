"""The papers' claims, as data, and their check against a reproduction's `Results`.

A claim compares two rows (a above b) in cells, one per clean fraction,
seed by seed (the runs of one seed share their noisy model and data): a
paired t-test of the differences a − b over the seeds both rows have
(`statistics.paired_t_test`). A cell is held when the mean difference is in
the claimed direction with a two-sided p < 0.05, reversed when it is the
other way with p < 0.05, and not shown otherwise; one seed shows only a
direction. A claim is held when every cell holds, reversed when any cell is
reversed, not shown otherwise.
"""

import dataclasses
from typing import Any

from nlr_tf.reproduce.markdown import pct
from nlr_tf.reproduce.results import AT_CAP, ML, NR_ROWS, SL, Results
from nlr_tf.reproduce.statistics import ALPHA, HELD, NOT_MEASURED, NOT_SHOWN, ONE_SEED, REVERSED, test_text

EVERY, MAIN = "every", "main"  # the fractions a claim is checked at


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the papers: for every pair (a, b), row a above row b, at each fraction the claim is checked at.

    Attributes:
        key: str. A short name for the claim (not in the results).
        words: str. The claim as results.md and results.json state it.
        variant: str. multi_label or single_label.
        pairs: tuple of (a, b). The rows compared, each a claimed above its b.
        metric: str. mAP, APall or top1.
        fractions: str. EVERY clean fraction the reproduction has, or the MAIN fraction only (the first
            fraction where the reproduction lacks the main one).
        margin: float. How far below b a may be and the claim still hold (0: a above b).
    """

    key: str
    words: str
    variant: str
    pairs: tuple[tuple[str, str], ...]
    metric: str
    fractions: str
    margin: float = 0.0


LABEL_CLEANING = ("lc_pretrained", "lc_joint")  # Veit WP and TJ

CLAIMS = (
    *(
        Claim(
            key=f"hu_t2_{nr}",
            words=f"Hu T2: {nr} above FT-L, FT-M, Veit WP and TJ in mAP at every clean fraction",
            variant=ML,
            pairs=tuple((nr, b) for b in ("ft_last", "ft_mixed", *LABEL_CLEANING)),
            metric="mAP",
            fractions=EVERY,
        )
        for nr in NR_ROWS
    ),
    Claim(
        key="hu_t2_whole",
        words="Hu T2: proposed (sigmoid) above Noisy-FT-W in mAP",
        variant=ML,
        pairs=(("nr_sigmoid", "ft_whole"),),
        metric="mAP",
        fractions=EVERY,
    ),
    Claim(
        key="hu_t5_ml",
        words="Hu T5 (multi-label): g, h jointly above g alone and above h alone in mAP",
        variant=ML,
        pairs=(("nr_sigmoid", "g_only"), ("nr_sigmoid", "h_only")),
        metric="mAP",
        fractions=MAIN,
    ),
    Claim(
        key="hu_t5_sl",
        words="Hu T5 (single-label): g, h jointly above g alone and above h alone in top-1",
        variant=SL,
        pairs=(("nr_sigmoid", "g_only"), ("nr_sigmoid", "h_only")),
        metric="top1",
        fractions=MAIN,
    ),
    Claim(
        key="hu_t4_order",
        words="Hu T4: single-label proposed above clean-only above noisy in top-1",
        variant=SL,
        pairs=(("nr_sigmoid", "clean_only"), ("clean_only", "noisy")),
        metric="top1",
        fractions=MAIN,  # Hu's Table 4 is one fraction; the other single-label fractions run on one seed only
    ),
    Claim(
        key="veit_t2_fine_tuning",
        words="Veit T2: label cleaning (WP and TJ) above both fine-tuning variants in APall",
        variant=ML,
        pairs=tuple((lc, ft) for lc in LABEL_CLEANING for ft in ("ft_last", "ft_mixed")),
        metric="APall",
        fractions=EVERY,
    ),
    Claim(
        key="veit_t2_misra",
        words="Veit T2: label cleaning (WP and TJ) above Misra et al.'s visual and relevance classifiers in APall",
        variant=ML,
        pairs=tuple((lc, m) for lc in LABEL_CLEANING for m in ("misra_visual", "misra_relevance")),
        metric="APall",
        fractions=EVERY,
    ),
    Claim(
        key="hu_t4_baselines",
        words="Hu T4: proposed (sigmoid) above CleanNet-wsoft and Forward (rows 3, 5) in top-1",
        variant=SL,
        pairs=(("nr_sigmoid", "cleannet"), ("nr_sigmoid", "forward")),
        metric="top1",
        fractions=MAIN,
    ),
    Claim(
        key="hu_t4_fine_tuned",
        words="Hu T4: CleanNet-wsoft and Forward fine-tuned on the clean set above themselves (rows 4 > 3, 6 > 5)",
        variant=SL,
        pairs=(("cleannet_ft", "cleannet"), ("forward_ft", "forward")),
        metric="top1",
        fractions=MAIN,
    ),
    # The convex reference: ft_last is the same model class as the clean-set logistic regression; the check holds
    # where ft_last − logreg_clean is above −0.5 mAP points under the same rule as the papers' claims.
    Claim(
        key="logreg_reference",
        words="protocol: ft_last within 0.5 mAP of (or above) the clean-set logistic regression",
        variant=ML,
        pairs=(("ft_last", "logreg_clean"),),
        metric="mAP",
        fractions=EVERY,
        margin=0.005,
    ),
)

# How results.md states the rule the claims are checked by.
CLAIMS_RULE = (
    "Each claim says a row is above another (a − b > 0) in cells, one per clean fraction. A cell is a paired "
    "t-test over the seeds both rows have (the runs of one seed share their noisy model and data): the mean "
    "difference in points, SE = the differences' sample standard deviation / √n, t = mean / SE with n − 1 "
    f"degrees of freedom, and its two-sided p. A cell is **held** when the difference is positive with p < "
    f"{ALPHA:g}, **reversed** when it is negative with p < {ALPHA:g}, **not shown** otherwise; one "
    "seed shows only a direction. When every seed's difference is the same non-zero number, SE is 0, t is "
    "infinite and p = 0 (null in results.json); when all are zero, the cell is not shown. A claim is held when "
    "every cell holds, reversed when any cell is reversed, not shown otherwise. Cells are tested one by one, "
    "without a correction for multiple comparisons: when two rows are equal, each cell still reads reversed "
    f"with probability {ALPHA / 2:g}, so a claim of many cells can read reversed by chance. "
    f"{AT_CAP} names a row of the cell that had its best validation at its step cap."
)


def _rows_at_cap(res: Results, variant: str, fraction: float, rows) -> list[dict[str, Any]]:
    """Which of `rows` had their best validation at the step cap at `fraction`, in how many seeds."""
    out = []
    for row in rows:
        k, n = res.at_cap(variant, row, fraction)
        if k:
            out.append({"row": row, "seeds_at_cap": k, "seeds": n})
    return out


def check(claim: Claim, res: Results, main_fraction: float) -> dict[str, Any]:
    """One claim: a above b (by more than −margin) for every pair at every fraction where both rows ran.

    Returns:
        dict with `claim` (its words), `verdict` (held / reversed / not shown, a direction at one seed, or not
        measured), `summary` and `cells` (one paired t-test per pair and fraction where both rows ran).
    """
    fractions = res.fractions[claim.variant]
    if claim.fractions == MAIN:
        fractions = [f for f in fractions if f == main_fraction] or fractions[:1]
    cells = []
    for a, b in claim.pairs:
        for f in fractions:
            d = res.difference(claim.variant, a, b, f, claim.metric, claim.margin)
            if d is not None:
                caps = _rows_at_cap(res, claim.variant, f, (a, b))
                cells.append({"a": a, "b": b, "fraction": f, "metric": claim.metric, **d, "at_cap": caps})
    verdicts = [c["verdict"] for c in cells]
    one_seed = [c for c in cells if c["seeds"] < 2]
    if not cells:
        verdict, summary = NOT_MEASURED, "no cell has both rows"
    elif len(one_seed) == len(cells):
        agree = sum(c["mean"] + c["margin"] > 0 for c in cells)
        verdict, summary = ONE_SEED, f"{agree} of {len(cells)} cells point the claimed way; one seed tests nothing"
    else:
        verdict = REVERSED if REVERSED in verdicts else (HELD if all(v == HELD for v in verdicts) else NOT_SHOWN)
        counts = [(sum(v == w for v in verdicts), w) for w in (HELD, REVERSED, NOT_SHOWN)]
        counts.append((len(one_seed), "with one seed"))
        summary = f"{len(cells)} cells: " + ", ".join(f"{k} {w}" for k, w in counts if k)
    if any(c["at_cap"] for c in cells):
        summary += f"; {AT_CAP} a row at its step cap in some cells"
    return {"claim": claim.words, "verdict": verdict, "summary": summary, "cells": cells}


def claim_markdown(claim: dict[str, Any]) -> str:
    """A claim's line of results.md (verdict, claim, summary), then one line per cell."""
    lines = [f"- **{claim['verdict']}**: {claim['claim']} ({claim['summary']})."]
    for c in claim["cells"]:
        caps = "".join(
            f"; {AT_CAP} {x['row']} at its step cap in {x['seeds_at_cap']} of {x['seeds']} seeds" for x in c["at_cap"]
        )
        lines.append(f"  - {c['a']} − {c['b']} at {pct(c['fraction'])}: {test_text(c)}: {c['verdict']}{caps}")
    return "\n".join(lines)


def claims(res: Results, main_fraction: float) -> list[dict[str, Any]]:
    """The papers' claims on these numbers: held / reversed / not shown, from paired t-tests per cell."""
    return [check(claim, res, main_fraction) for claim in CLAIMS]
