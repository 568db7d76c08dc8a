"""Third grade to college (Hase et al.'s Figure 1): how far down the school ladder can the
training data go before college-level accuracy suffers?

Training pools: ARC grade 3, ARC grade 8, MMLU high school (MMLU's easy pool) and MMLU college
(MMLU's hard pool); test set: MMLU's college-level hard test set (the sweep's with every rated
item). Every probe is read at one layer, MMLU's, chosen on MMLU's easy validation items; each
draw's setting is chosen on its own dataset's easy validation items (left out of its pool).
SGR of each pool is taken against MMLU zero-shot, with the college-trained probe as ceiling.
ICL is not run here: the harness's ICL draws demonstrations from one task's own pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from truthprobe.plots import plot_ladder
from truthprobe.results import sgr_shown
from truthprobe.studies.base import Study, StudyConfig, run_with, scored
from truthprobe.studies.fits import hits

ARC, MMLU = "arc:grade", "mmlu:level"


@dataclass(frozen=True)
class ThirdGradeToCollegeConfig(StudyConfig):
    """ARC grade 3 / grade 8 / MMLU high school / MMLU college probes on MMLU college items."""

    def study_tasks(self) -> tuple[str, ...]:
        return (ARC, MMLU)


def pools(study: Study) -> list[tuple[str, str, np.ndarray]]:
    """(name, task, rows) of each training pool, easiest first."""
    arc, mmlu = study.sources[ARC], study.sources[MMLU]
    grade = arc.values("grade")
    outside = np.ones(len(grade), bool)
    outside[arc.validation] = False
    outside[arc.test] = False  # not tested here, but kept out as in every ARC study
    return [
        ("ARC grade 3", ARC, np.flatnonzero((grade == 3) & outside)),
        ("ARC grade 8", ARC, np.flatnonzero((grade == 8) & outside)),
        ("MMLU high school", MMLU, mmlu.pools["easy"]),
        ("MMLU college", MMLU, mmlu.pools["hard"]),
    ]


def ladder_rows(study: Study) -> tuple[list[dict], dict[str, np.ndarray]]:
    mmlu = study.sources[MMLU]
    layer = study.layer(MMLU)
    correct = {}
    for name, task, rows in pools(study):
        fitted = study.fit(task, rows, name, layer)
        correct[name] = hits(fitted, mmlu.at(layer).take(mmlu.test))
    result = []
    for (name, task, rows), matrix in zip(pools(study), correct.values(), strict=True):
        result.append(
            dict(
                train_pool=name, train_task=task, pool_size=len(rows), test_task=MMLU,
                layer=layer, ceiling=name == "MMLU college",
                **scored(study, mmlu, mmlu.test, matrix, correct["MMLU college"]),
            )
        )  # fmt: skip
    for row in result:
        row["sgr_label"] = sgr_label(row) if row["ceiling"] else f"SGR {sgr_shown(row)}"
    return result, {k: v.astype(np.uint8) for k, v in correct.items()}


def summary(rows: list[dict]) -> str:
    first = rows[0]
    lines = [
        f"tested on MMLU college (hard test set, {first['n_test']} items, layer "
        f"{first['layer']}); zero-shot {first['zero_shot']:.3f}, chance {first['chance']:.3f}",
        f"{'trained on':<18} {'pool':>5} {'accuracy [95% CI]':>22}  SGR (ceiling: MMLU college)",
    ]
    for r in rows:
        lines.append(
            f"{r['train_pool']:<18} {r['pool_size']:>5} {r['accuracy']:.3f} "
            f"[{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}]  {sgr_label(r)}"
        )
    return "\n".join(lines)


def sgr_label(row: dict) -> str:
    """The ceiling's SGR is 1 by definition: say whether there is a gap above zero-shot."""
    if row["ceiling"]:
        return "ceiling (" + ("no gap above zero-shot" if row["no_gap"] else "a gap") + ")"
    return sgr_shown(row)


def run_study(config: ThirdGradeToCollegeConfig) -> str:
    """Run the study, store it; returns what the command prints."""
    return run_with("third_grade_to_college", config, ladder_rows, summary, plot_ladder)
