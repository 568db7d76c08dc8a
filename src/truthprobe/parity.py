"""Zero-shot parity with lm-evaluation-harness: the same items scored by lm-eval and by truthprobe.

lm-eval's side is lm-eval's own code: each record is rendered by its task's YAML (`arc_easy`, or
`mmlu_<subject>_continuation` for MMLU) with the records themselves as the task's dataset (no
hub), scored by `HFLM` wrapped around the very model truthprobe loaded, and graded by the task's
`process_results` (`acc`, `acc_norm`). truthprobe's side renders with the `lmeval` template and
scores with its packed engine (`truthprobe.scoring`), the path extraction and zero-shot use.
Needs `pip install 'truthprobe[lmeval]'` (lm-eval 0.4.13, whose task files are read).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from truthprobe.choice_probs import zero_shot_probs
from truthprobe.configs import DataSource, ModelConfig, require, require_positive
from truthprobe.data import Question
from truthprobe.errors import TruthprobeError
from truthprobe.prompts import resolve_template

if TYPE_CHECKING:  # torch is imported when the comparison runs, not when its flags are read
    from truthprobe.models import LoadedModel

#: Tolerances of the check: zero-shot accuracy within 1 point, each choice's log-likelihood
#: within 0.05 nats (float32).
ACCURACY_POINTS = 1.0
LL_NATS = 0.05

#: Datasets lm-eval has a multiple-choice task for in this style, and that task's YAML file.
LMEVAL_TASKS = {"arc": "arc/arc_easy.yaml", "mmlu": "mmlu/continuation/mmlu_{subject}.yaml"}


class ParityError(TruthprobeError):
    """lm-eval is not installed, or has no task for the records' dataset."""


def lmeval_doc(record: Question) -> dict:
    """The record as the hub's row for lm-eval's task (ARC: labelled choices; MMLU: a list)."""
    assert record.choices is not None and record.answer_index is not None
    if record.dataset == "arc":
        labels = record.meta.get("labels") or [chr(65 + i) for i in range(record.n_choices)]
        return {
            "id": record.id,
            "question": record.question,
            "choices": {"text": list(record.choices), "label": list(labels)},
            "answerKey": labels[record.answer_index],
        }
    return {
        "question": record.question,
        "subject": record.meta.get("subject", ""),
        "choices": list(record.choices),
        "answer": record.answer_index,
    }


def _task_file(record: Question) -> Path:
    try:
        import lm_eval
    except ImportError:
        raise ParityError(
            "lm-eval is not installed: pip install 'truthprobe[lmeval]' (lm-eval 0.4.13)"
        ) from None
    if record.dataset not in LMEVAL_TASKS:
        raise ParityError(
            f"record {record.id!r}: lm-eval has no multiple-choice task in this style for "
            f"dataset {record.dataset!r}; parity is checked on {', '.join(LMEVAL_TASKS)}"
        )
    name = LMEVAL_TASKS[record.dataset].format(subject=record.meta.get("subject", ""))
    path = Path(lm_eval.__file__).parent / "tasks" / name
    if not path.is_file():
        raise ParityError(f"record {record.id!r}: lm-eval has no task file {name}")
    return path


def lmeval_tasks(records: Sequence[Question]) -> list[tuple[object, dict]]:
    """lm-eval's task object and document for each record (one task per task file)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on custom datasets
    groups: dict[Path, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(_task_file(record), []).append(i)
    out: list[tuple[object, dict]] = [None] * len(records)  # type: ignore[list-item]
    for path, rows in groups.items():
        docs = [lmeval_doc(records[i]) for i in rows]
        config = load_yaml(path)
        for key in ("tag", "group"):
            config.pop(key, None)
        splits = {config[k] for k in ("test_split", "validation_split", "training_split",
                                      "fewshot_split") if config.get(k)}  # fmt: skip
        table = datasets.Dataset.from_list(docs)
        config["custom_dataset"] = lambda table=table, splits=splits, **_: datasets.DatasetDict(
            {s: table for s in splits}
        )
        task = ConfigurableTask(config=config)
        for i, doc in zip(rows, task.eval_docs, strict=True):
            out[i] = (task, doc)
    return out


@dataclass
class ParityItem:
    """One record through both: prompts, per-choice log-likelihoods, and each side's grades."""

    id: str
    lmeval_prompt: str
    truthprobe_prompt: str
    lmeval_continuations: list[str]
    truthprobe_continuations: list[str]
    lmeval_ll: list[float]
    truthprobe_ll: list[float]
    lmeval_acc: float
    lmeval_acc_norm: float
    truthprobe_acc: float
    truthprobe_acc_norm: float


@dataclass
class ParityReport:
    items: list[ParityItem] = field(default_factory=list)

    def mean(self, name: str) -> float:
        return float(np.mean([getattr(i, name) for i in self.items]))

    @property
    def max_ll_difference(self) -> float:
        return max(
            float(np.max(np.abs(np.subtract(i.lmeval_ll, i.truthprobe_ll)))) for i in self.items
        )

    @property
    def prompts_equal(self) -> int:
        return sum(
            i.lmeval_prompt == i.truthprobe_prompt
            and i.lmeval_continuations == i.truthprobe_continuations
            for i in self.items
        )

    def describe(self) -> str:
        n = len(self.items)
        return (
            f"{n} items: prompts and continuations identical on {self.prompts_equal} of {n}; "
            f"acc lm-eval {self.mean('lmeval_acc'):.4f} truthprobe "
            f"{self.mean('truthprobe_acc'):.4f}; "
            f"acc_norm lm-eval {self.mean('lmeval_acc_norm'):.4f} truthprobe "
            f"{self.mean('truthprobe_acc_norm'):.4f}; largest per-choice log-likelihood "
            f"difference {self.max_ll_difference:.4f} nats"
        )


def compare(loaded: LoadedModel, records: Sequence[Question], batch_size: int = 8) -> ParityReport:
    """Score `records` (ARC or MMLU, with choices) through lm-eval and through truthprobe."""
    from lm_eval.models.huggingface import HFLM

    tasks = lmeval_tasks(records)
    requests, owners = [], []
    for i, (task, doc) in enumerate(tasks):
        context = task.fewshot_context(doc, 0)
        for request in task.construct_requests(doc, context, metadata=(task, i, 1)):
            requests.append(request)
            owners.append(i)
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    results = lm.loglikelihood(requests, disable_tqdm=True)
    per_item: list[list[tuple[float, bool]]] = [[] for _ in records]
    arguments: list[list[tuple[str, str]]] = [[] for _ in records]
    for owner, request, result in zip(owners, requests, results, strict=True):
        per_item[owner].append(result)
        arguments[owner].append(request.args)

    ours = [resolve_template("lmeval", [r]) for r in records]
    from truthprobe.scoring import encode, score_continuations

    items = [encode(loaded.tokenizer, t, r) for t, r in zip(ours, records, strict=True)]
    n_choices = max(r.n_choices for r in records)
    # `encode` counts each choice's characters as lm-eval does (`prompts.choice_chars`)
    logprob, chars = score_continuations(loaded, items, n_choices, batch_size, progress=False)
    mask = np.arange(n_choices) < np.array([r.n_choices for r in records])[:, None]
    ids = [r.id for r in records]
    gold = np.array([r.answer_index for r in records])
    acc = zero_shot_probs(ids, logprob, chars, mask, "raw").correct(gold)
    acc_norm = zero_shot_probs(ids, logprob, chars, mask, "chars").correct(gold)
    report = ParityReport()
    for i, record in enumerate(records):
        task, doc = tasks[i]
        graded = task.process_results(doc, per_item[i])
        ll = logprob[i, : record.n_choices]
        report.items.append(
            ParityItem(
                id=record.id,
                lmeval_prompt=arguments[i][0][0],
                truthprobe_prompt=ours[i].prefix(record),
                lmeval_continuations=[continuation for _, continuation in arguments[i]],
                truthprobe_continuations=ours[i].continuations(record),
                lmeval_ll=[float(x) for x, _ in per_item[i]],
                truthprobe_ll=[float(x) for x in ll],
                lmeval_acc=float(graded["acc"]),
                lmeval_acc_norm=float(graded["acc_norm"]),
                truthprobe_acc=float(acc[i]),
                truthprobe_acc_norm=float(acc_norm[i]),
            )
        )
    return report


@dataclass(frozen=True)
class ParityConfig:
    """Zero-shot acc / acc_norm through lm-evaluation-harness and through truthprobe on the
    same items (needs truthprobe[lmeval])."""

    datasets: tuple[str, ...] = ("arc", "mmlu")
    """Datasets to check (lm-eval has this style of task for arc and mmlu)."""
    n: int = 200
    """Test items per dataset, drawn with --seed (0 = every test item)."""
    seed: int = 0
    """Seed of the draw of test items."""
    model: ModelConfig = ModelConfig(dtype="float32")
    """float32 by default: lm-eval sums log-likelihoods in the model's dtype."""
    batch_size: int = 8
    """Items per forward pass, on both sides (lm-eval's HFLM and truthprobe's engine)."""
    data: DataSource = DataSource()

    def __post_init__(self) -> None:
        unknown = [d for d in self.datasets if d not in LMEVAL_TASKS]
        require(
            bool(self.datasets) and not unknown,
            "datasets",
            f"must be among {', '.join(LMEVAL_TASKS)}, got {unknown[0] if unknown else 'none'}",
        )
        require(self.n >= 0, "n", f"must be 0 (every test item) or more, got {self.n}")
        require_positive(self.batch_size, "batch_size")

    def run(self) -> int:
        """Exit status 1 when lm-eval and truthprobe differ beyond the tolerances."""
        return run_parity(self)


def draw_test_items(config: ParityConfig, dataset: str) -> list[Question]:
    """`config.n` test records of `dataset` with choices, drawn with `config.seed` (file order
    kept)."""
    loaded = config.data.load(dataset)
    records = [r for r in loaded.records if r.choices and r.split == "test"]
    n, seed = config.n, config.seed
    if n and n < len(records):
        keep = np.sort(np.random.default_rng(seed).choice(len(records), n, replace=False))
        records = [records[i] for i in keep]
    return records


def run_parity(config: ParityConfig) -> int:
    """Print each dataset's comparison; exit status 1 if a tolerance is exceeded."""
    from truthprobe.models import load_configured

    loaded = load_configured(config.model)
    ok = True
    for dataset in config.datasets:
        items = draw_test_items(config, dataset)
        report = compare(loaded, items, config.batch_size)
        gaps = [
            abs(report.mean(f"lmeval_{m}") - report.mean(f"truthprobe_{m}")) * 100
            for m in ("acc", "acc_norm")
        ]
        within = (
            max(gaps) <= ACCURACY_POINTS
            and report.max_ll_difference <= LL_NATS
            and report.prompts_equal == len(report.items)
        )
        ok &= within
        verdict = "within" if within else "OUTSIDE"
        print(f"{dataset} ({loaded.fingerprint.slug}): {report.describe()}")
        print(
            f"  {verdict} the tolerances ({ACCURACY_POINTS:g} point of accuracy, {LL_NATS:g} "
            f"nats per choice); accuracy differences {gaps[0]:.2f} (acc) and {gaps[1]:.2f} "
            "(acc_norm) points"
        )
    return 0 if ok else 1
