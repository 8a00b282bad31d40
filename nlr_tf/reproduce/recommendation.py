"""Which method, and how many clean labels: the recommendation read off a comparison's results.

At each clean-label budget the **leading row** is the one with the best
mean test metric over seeds among the rows a user can train and deploy
(not the GT upper bound, which needs every label verified, nor the
logistic-regression references, which are measurements); the rows it is
**significantly above** are those whose seed-paired difference from it is
held by the paired t-test at 5 % (`statistics`). The budget beyond which
**more clean labels stop paying** is the smallest budget whose leading row
is within noise of the largest budget's leading row: the paired t-test of
(largest budget's leader at the largest budget) − (this budget's leader at
this budget), seed by seed, does not hold. With one seed there is no test:
every comparison reads "direction at one seed", and no budget is called
enough.
"""

from collections.abc import Sequence
from typing import Any, Optional

from nlr_tf.reproduce.results import MAIN_METRIC, Results
from nlr_tf.reproduce.statistics import HELD, ONE_SEED, cell_verdict, paired_t_test, test_text

NOT_DEPLOYABLE = ("gt", "logreg_clean", "logreg_noisy")


def _candidates(res: Results, variant: str, fraction: float, rows: Optional[Sequence[str]]) -> list[str]:
    keys = sorted(row for (v, row) in res.labels if v == variant)
    return [
        row
        for row in keys
        if row not in NOT_DEPLOYABLE
        and (rows is None or row in rows)
        and res.mean(variant, row, fraction, MAIN_METRIC[variant]) is not None
    ]


def recommend(res: Results, variant: str, rows: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The leader per budget, what it is above, and the budget where more clean labels stop paying.

    Args:
        res: `Results` of one benchmark or dataset.
        variant: "multi_label" or "single_label".
        rows: the rows that may lead (default: every deployable row).

    Returns:
        dict with `metric`, `budgets` (per fraction: `fraction`, `leader`,
        `mean`, `above` (rows significantly below it), `within_noise` (the
        others), each with its test), and `enough` (the fraction beyond which
        more clean labels stop paying, or None) with its test.
    """
    metric = MAIN_METRIC[variant]
    budgets = []
    for fraction in res.fractions[variant]:
        candidates = _candidates(res, variant, fraction, rows)
        if not candidates:
            continue
        leader = max(candidates, key=lambda r: (res.mean(variant, r, fraction, metric), r))
        above, within = [], []
        for row in candidates:
            if row == leader:
                continue
            test = res.difference(variant, leader, row, fraction, metric)
            entry = {"row": row, "label": res.labels[(variant, row)], "test": test}
            (above if test and test["verdict"] == HELD else within).append(entry)
        budgets.append(
            {
                "fraction": fraction,
                "leader": leader,
                "label": res.labels[(variant, leader)],
                "mean": res.mean(variant, leader, fraction, metric),
                "above": above,
                "within_noise": within,
            }
        )
    enough, enough_test, tested = None, None, False
    if budgets:
        last = budgets[-1]
        top = res.per_seed(variant, last["leader"], last["fraction"], metric)
        for b in budgets[:-1]:
            here = res.per_seed(variant, b["leader"], b["fraction"], metric)
            seeds = sorted(set(top) & set(here))
            if len(seeds) < 2:
                continue  # one seed: no test, no budget called enough
            tested = True
            test = paired_t_test([top[s] - here[s] for s in seeds])
            test["verdict"] = cell_verdict(test)
            if test["verdict"] != HELD:
                enough, enough_test = b["fraction"], test
                break
    return {"metric": metric, "budgets": budgets, "enough": enough, "enough_test": enough_test, "tested": tested}


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def recommendation_markdown(rec: dict[str, Any], budget_words=_pct) -> str:
    """The recommendation in words: one line per budget, then where more clean labels stop paying."""
    if not rec["budgets"]:
        return "No row was trained: nothing to recommend."
    metric = rec["metric"]
    lines = []
    for b in rec["budgets"]:
        one_seed = any(o["test"] and o["test"]["seeds"] < 2 for o in b["above"] + b["within_noise"])
        line = f"- **{budget_words(b['fraction'])}**: {b['label']} leads ({metric} {100 * b['mean']:.2f})"
        if one_seed:
            line += f"; against the others only the {ONE_SEED}"
        else:
            if b["above"]:
                line += "; significantly above " + ", ".join(
                    f"{o['label']} ({test_text(o['test'])})" for o in b["above"]
                )
            if b["within_noise"]:
                line += "; within noise of " + ", ".join(o["label"] for o in b["within_noise"])
        lines.append(line + ".")
    last = rec["budgets"][-1]
    if len(rec["budgets"]) == 1:
        lines.append("- More clean labels: one budget only, so nothing says where they stop paying.")
    elif not rec["tested"]:
        lines.append(
            f"- More clean labels: one seed, so no test says where they stop paying ({ONE_SEED}: the leaders' "
            "metrics above)."
        )
    elif rec["enough"] is None:
        lines.append(
            f"- More clean labels pay up to the largest budget: every smaller budget's leader is significantly "
            f"below the {budget_words(last['fraction'])} leader."
        )
    else:
        lines.append(
            f"- More clean labels stop paying beyond **{budget_words(rec['enough'])}**: its leader is within noise "
            f"of the {budget_words(last['fraction'])} leader ({test_text(rec['enough_test'])})."
        )
    return "\n".join(lines)
