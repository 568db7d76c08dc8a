"""Loading the paper datasets from the Hugging Face hub and converting rows to `Question`s.

The converters are pure functions of one hub row, so they are tested offline on rows written in
the hub's format; only `load_hub` touches the network. The converted records equal those in
`shared/data` (same ids, choices, answers and meta), so local and hub runs are interchangeable.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from truthprobe.data.local import WAYS
from truthprobe.data.records import MAX_CHOICES, DataError, Question, parse_record

ARC_HUB_ID = "allenai/ai2_arc"
MMLU_HUB_ID = "cais/mmlu"
STRATEGYQA_HUB_ID = "ChilleD/StrategyQA"
GSM8K_HUB_ID = "openai/gsm8k"
#: Hase et al.'s ARC hardness annotations (Apache-2.0), keyed `ARCEZ_<id>` / `ARCCH_<id>`.
ARC_ANNOTATIONS_URL = (
    "https://raw.githubusercontent.com/allenai/easy-to-hard-generalization/main/"
    "data/arc-challenge-easy-annotations.json"
)

#: In the order of the local files (each subject's high-school level, then its college level):
#: the order fixes record rows, so hub and local data share one content hash and one cache.
MMLU_STEM5_SUBJECTS: tuple[str, ...] = tuple(
    f"{level}_{subject}"
    for subject in ("biology", "chemistry", "computer_science", "mathematics", "physics")
    for level in ("high_school", "college")
)

_ARC_SUBSETS = {"easy": ("ARC-Easy", "ARCEZ_"), "challenge": ("ARC-Challenge", "ARCCH_")}


def arc_annotation_meta(annotation: Mapping[str, str] | None) -> dict[str, Any]:
    """ARC hardness fields from one annotation entry (all None when the item is unannotated).

    The grade is the trailing number of e.g. "Grade 05"; subject names such as "Biology" give
    no numeric grade, as in the paper's code.
    """
    if annotation is None:
        return {
            "grade": None,
            "grade_raw": None,
            "bloom": None,
            "depth_of_knowledge": None,
            "difficulty": None,
        }
    raw = annotation.get("grade")
    last = raw.split()[-1] if raw else ""
    return {
        "grade": int(last) if last.isdigit() else None,
        "grade_raw": raw,
        "bloom": annotation.get("bloom"),
        "depth_of_knowledge": annotation.get("depth_of_knowledge"),
        "difficulty": annotation.get("difficulty"),
    }


def arc_row_to_record(
    row: Mapping[str, Any], subset: str, split: str, annotations: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """One `allenai/ai2_arc` row (`id`, `question`, `choices{text,label}`, `answerKey`)."""
    labels = list(row["choices"]["label"])
    texts = list(row["choices"]["text"])
    if row["answerKey"] not in labels:
        raise DataError(
            f"{ARC_HUB_ID} {subset}/{split} id {row['id']!r}: field 'answerKey': "
            f"{row['answerKey']!r} is not one of the labels {labels}"
        )
    answer_index = labels.index(row["answerKey"])
    prefix = _ARC_SUBSETS[subset][1]
    return {
        "id": row["id"],
        "dataset": "arc",
        "split": split,
        "question": row["question"],
        "choices": texts,
        "answer_index": answer_index,
        "answer": texts[answer_index],
        "meta": {
            "subset": subset,
            "labels": labels,
            **arc_annotation_meta(annotations.get(prefix + row["id"])),
        },
    }


def mmlu_row_to_record(row: Mapping[str, Any], subject: str, split: str, index: int) -> dict:
    """One `cais/mmlu` row (`question`, `choices`, `answer` as 0-3) of a STEM-5 subject."""
    choices = list(row["choices"])
    answer_index = int(row["answer"])
    return {
        "id": f"{subject}/{split}/{index}",
        "dataset": "mmlu",
        "split": split,
        "question": row["question"],
        "choices": choices,
        "answer_index": answer_index,
        "answer": choices[answer_index] if 0 <= answer_index < len(choices) else "",
        "meta": {
            "subject": subject,
            "level": "college" if subject.startswith("college_") else "high_school",
        },
    }


def strategyqa_row_to_record(row: Mapping[str, Any], split: str) -> dict[str, Any]:
    """One StrategyQA row (`qid`, `question`, `answer` as bool, `facts`, `decomposition`).

    Some hub copies store facts as one string and omit the decomposition; both are accepted.
    """
    facts = row.get("facts") or []
    if isinstance(facts, str):
        facts = [facts]
    decomposition = list(row.get("decomposition") or [])
    answer_index = int(bool(row["answer"]))
    return {
        "id": row["qid"],
        "dataset": "strategyqa",
        "split": split,
        "question": row["question"],
        "choices": ["no", "yes"],
        "answer_index": answer_index,
        "answer": ["no", "yes"][answer_index],
        "meta": {
            "decomposition": decomposition,
            "facts": list(facts),
            "num_steps": len(decomposition) if decomposition else None,
            "term": row.get("term"),
            "description": row.get("description"),
        },
    }


def gsm8k_solution_lines(solution: str) -> int:
    """Non-empty solution lines before the `####` answer line (uncapped)."""
    body = solution.split("####")[0]
    return sum(1 for line in body.split("\n") if line.strip())


def gsm8k_row_to_record(row: Mapping[str, Any], split: str, index: int) -> dict[str, Any]:
    """One `openai/gsm8k` row (`question`, `answer` = worked solution ending `#### N`)."""
    solution = row["answer"]
    if "####" not in solution:
        raise DataError(
            f"{GSM8K_HUB_ID} {split} row {index}: field 'answer': no '#### <number>' line"
        )
    return {
        "id": f"gsm8k/{split}/{index}",
        "dataset": "gsm8k",
        "split": split,
        "question": row["question"],
        "choices": None,
        "answer_index": None,
        "answer": solution.split("####")[-1].strip(),
        "meta": {"solution": solution, "num_steps": gsm8k_solution_lines(solution)},
    }


def fetch_arc_annotations(source: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The ARC annotation file from a local path, or from its public repository when online."""
    if source is not None and Path(source).is_file():
        return json.loads(Path(source).read_text(encoding="utf-8"))
    url = str(source) if source is not None else ARC_ANNOTATIONS_URL
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read().decode("utf-8"))
    except OSError as err:
        raise DataError(
            f"could not fetch the ARC hardness annotations from {url} ({err}); give a local copy "
            f"(`truthprobe data fetch --annotations FILE`), or use local data: {WAYS}"
        ) from err


def _hub_rows(hub_id: str, config: str | None, split: str) -> Iterable[Mapping[str, Any]]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise DataError("loading from the hub needs the `datasets` package") from err
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # the hub client raises many unrelated types when offline
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"could not load {hub_id} ({config or 'default'}, split {split}) from the Hugging "
            f"Face hub ({message}; a gated dataset needs `hf auth login`); offline, use local "
            f"data: {WAYS}"
        ) from err


def load_hub_located(
    name: str,
    max_choices: int = MAX_CHOICES,
    annotations: str | Path | None = None,
    notes: Mapping[str, Mapping[str, str]] | None = None,
) -> list[tuple[Question, str]]:
    """Records of dataset `name` from the Hugging Face hub, each with a `hub-id:split:row` tag.

    ARC's hardness annotations: `notes` if already read, else from `annotations` (a file or
    URL; default: their public repository).
    """
    rows: list[tuple[dict[str, Any], str]] = []
    if name == "arc":
        notes = notes if notes is not None else fetch_arc_annotations(annotations)
        for subset, (config, _) in _ARC_SUBSETS.items():
            for split in ("train", "validation", "test"):
                for i, row in enumerate(_hub_rows(ARC_HUB_ID, config, split)):
                    where = f"{ARC_HUB_ID}:{config}:{split}:{i}"
                    rows.append((arc_row_to_record(row, subset, split, notes), where))
    elif name == "mmlu":
        for split in ("dev", "test"):
            for subject in MMLU_STEM5_SUBJECTS:
                for i, row in enumerate(_hub_rows(MMLU_HUB_ID, subject, split)):
                    where = f"{MMLU_HUB_ID}:{subject}:{split}:{i}"
                    rows.append((mmlu_row_to_record(row, subject, split, i), where))
    elif name == "strategyqa":
        for split in ("train", "test"):
            for i, row in enumerate(_hub_rows(STRATEGYQA_HUB_ID, None, split)):
                where = f"{STRATEGYQA_HUB_ID}:{split}:{i}"
                rows.append((strategyqa_row_to_record(row, split), where))
    elif name == "gsm8k":
        for split in ("train", "test"):
            for i, row in enumerate(_hub_rows(GSM8K_HUB_ID, "main", split)):
                rows.append((gsm8k_row_to_record(row, split, i), f"{GSM8K_HUB_ID}:{split}:{i}"))
    else:
        raise DataError(f"no hub source for dataset {name!r}; known: arc, mmlu, strategyqa, gsm8k")
    return [(parse_record(obj, where, None, max_choices), where) for obj, where in rows]
