"""Third grade to college (Hase et al.'s Figure 1): how far down the school ladder can the
training data go before college-level accuracy suffers?

Training pools: ARC grade 3, ARC grade 8 (ARC items of that grade outside ARC's test and
validation sets, as the study's own pools `grade=3` / `grade=8`), MMLU high school (MMLU's easy
pool) and MMLU college (MMLU's hard pool); test set: MMLU's college-level hard test set. Every
probe is read at one layer, MMLU's, chosen on MMLU's easy validation items; each draw's setting
is chosen on its own dataset's easy validation items. The MMLU rows are the sweep's own parts;
the ARC probes are scored on MMLU's test items (`Harness.run_transfers`). SGR of each pool is
taken against MMLU zero-shot, with the college-trained probe as ceiling. ICL is not run here:
the harness's ICL draws demonstrations from one task's own pools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from truthprobe.configs import CacheConfig, DataConfig, require
from truthprobe.hardness import hardness_values
from truthprobe.harness import Draw, Harness
from truthprobe.methods.base import layer_name
from truthprobe.plots import plot_ladder
from truthprobe.results import sgr_shown
from truthprobe.studies.planned import (
    PlannedStudy,
    PlannedStudyConfig,
    View,
    register,
)

ARC, MMLU = "arc:grade", "mmlu:level"


def pools(config: ThirdGradeToCollegeConfig) -> list[tuple[str, str, str]]:
    """(name, task, pool) of each training pool, easiest first."""
    school, college = config.tasks
    return [
        ("ARC grade 3", school, "grade=3"),
        ("ARC grade 8", school, "grade=8"),
        ("MMLU high school", college, "easy"),
        ("MMLU college", college, "hard"),
    ]


@dataclass(frozen=True)
class ThirdGradeToCollegeConfig(PlannedStudyConfig):
    """Probes trained on ARC grade 3, ARC grade 8, MMLU high school and MMLU college, tested
    on MMLU college items."""

    kind: ClassVar[str] = "third_grade_to_college"
    tasks: tuple[str, ...] = (ARC, MMLU)
    """The school task (rated by `grade`: its grade-3 and grade-8 items are pools) and the
    college task (rated by `level`: its easy and hard pools, tested on its hard test set)."""
    data: DataConfig = DataConfig(max_per_stratum=0)
    """Every rated item: ARC's grade-3 pool is small."""
    cache: CacheConfig = CacheConfig()

    def __post_init__(self) -> None:
        super().__post_init__()
        measures = tuple(t.rsplit(":", 1)[-1] for t in self.tasks)
        require(
            measures == ("grade", "level"),
            "tasks",
            f"takes a school task rated by grade and a college task rated by level "
            f"(default: {ARC} {MMLU}), got {' '.join(self.tasks)}",
        )


def plan(harness: Harness, view: View) -> None:
    school, college = view.config.tasks
    arc = harness.tasks[school]
    grade = np.array([np.nan if v is None else v for v in hardness_values(arc.records, "grade")])
    outside = np.ones(len(grade), bool)
    outside[arc.split.validation] = False
    outside[arc.split.test] = False  # not tested here, but kept out as in every ARC study
    sizes = {}
    for value in (3, 8):
        rows = np.flatnonzero((grade == value) & outside)
        harness.add_pool(school, f"grade={value}", rows)
        sizes[f"grade={value}"] = len(rows)
    sizes.update({k: len(harness.tasks[college].split.pools[k]) for k in ("easy", "hard")})
    view.plan["pool_sizes"] = sizes
    label = view.label(college)
    for value in (3, 8):
        harness.run_transfers(school, label, view.seeds_of(f"grade={value}"), college)


def ladder_rows(view: View) -> list[dict]:
    college = view.config.tasks[1]
    layer = view.layer(college)
    correct: dict[str, np.ndarray] = {}
    ladder = pools(view.config)  # type: ignore[arg-type]
    for name, task, pool in ladder:
        draws: list[Draw] = view.seeds_of(pool)
        correct[name] = view.correct(task, layer, draws, college if task != college else "")
    result = []
    for name, task, pool in ladder:
        result.append(
            dict(
                train_pool=name, train_task=task, pool_size=view.plan["pool_sizes"][pool],
                test_task=college, layer=layer, ceiling=name == "MMLU college",
                **view.cell(college, correct[name], correct["MMLU college"]),
            )
        )  # fmt: skip
    for row in result:
        row["sgr_label"] = sgr_label(row) if row["ceiling"] else f"SGR {sgr_shown(row)}"
    return result


def summary(rows: list[dict]) -> str:
    first = rows[0]
    lines = [
        f"tested on MMLU college (hard test set, {first['n_test']} items, layer "
        f"{layer_name(first['layer'])}); zero-shot {first['zero_shot']:.3f}, chance "
        f"{first['chance']:.3f}",
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


STUDY = register(
    PlannedStudy("third_grade_to_college", ThirdGradeToCollegeConfig, plan, ladder_rows, summary,
                 plot_ladder)
)  # fmt: skip
