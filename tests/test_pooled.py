"""Pooled training tasks (`arc:grade+mmlu:level`): the draw rule on real data, the harness's
pooled parts against their components' (cached states, zero-shot), and leave-one-dataset-out
rows of the transfer matrix against the stored probe scored again by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import write_jsonl

from truthprobe.activations import ActivationCache
from truthprobe.cli import main
from truthprobe.configs import DataConfig
from truthprobe.evaluate import SplitConfig
from truthprobe.methods.base import answer_end_features
from truthprobe.pooled import PooledSpec, PooledTask, leave_one_out
from truthprobe.probes import ProbeData
from truthprobe.runstore import PartKey, RunStore, load_run
from truthprobe.tasks import load_task

SPLIT = SplitConfig(n_train=12, seeds=2, validation_size=10)
SHARED = ["--n-train", "12", "--seeds", "2", "--validation-size", "10", "--n-boot", "200",
          "--no-progress"]  # fmt: skip


def pooled_of(texts: list[str], split: SplitConfig | None = None) -> PooledTask:
    data, split = DataConfig(), split or SplitConfig()
    spec = PooledSpec.parse("+".join(texts))
    return PooledTask.of(spec, [load_task(p, data, split) for p in spec.parts])


def test_a_pooled_draw_takes_equal_shares_nested_and_each_components_own_order():
    task = pooled_of(["arc:grade", "strategyqa:steps"])
    arc, sqa = task.components
    offset = len(arc.items)
    for train_on in ("easy", "hard", "all"):
        for seed in (0, 3):
            rows = task.split.train_rows(train_on, seed, 160)
            assert len(rows) == len(set(rows)) == 160
            own = rows[rows < offset], rows[rows >= offset] - offset
            assert len(own[0]) == len(own[1]) == 80  # equal shares, not the union's mix
            # each share is the start of that component's own seeded order (so of its draw)
            for share, part in zip(own, (arc, sqa), strict=True):
                order = part.split.draw_order(train_on, seed)
                assert set(share) == set(order[:80])
            # nested: the draw of 40 lies inside the draw of 160
            assert set(task.split.train_rows(train_on, seed, 40)) <= set(rows)
    # test and validation sets are the components' own, side by side
    assert np.array_equal(task.split.test, np.r_[arc.split.test, sqa.split.test + offset])
    assert np.array_equal(
        task.split.validation, np.r_[arc.split.validation, sqa.split.validation + offset]
    )
    assert np.array_equal(task.answers, np.r_[arc.answers, sqa.answers])
    assert task.ids[0].startswith("arc-grade/") and task.ids[-1].startswith("strategyqa-steps/")
    # a small pool runs out and the other fills the draw
    small = pooled_of(["arc:grade", "strategyqa:steps"], SplitConfig(n_train=12))
    rows = small.split.train_rows("hard", 0, len(small.split.pools["hard"]))
    assert set(rows) == set(small.split.pools["hard"])


def test_leave_one_out_pools_every_other_dataset_where_two_are_left():
    tasks = ("arc:grade", "arc:bloom", "mmlu:level", "strategyqa:steps")
    pooled = leave_one_out(tasks)
    assert pooled["mmlu:level"] == "arc:grade+arc:bloom+strategyqa:steps"
    assert pooled["arc:grade"] == pooled["arc:bloom"] == "mmlu:level+strategyqa:steps"
    assert leave_one_out(("arc:grade", "mmlu:level")) == {}  # one left: that task's own row


@pytest.fixture(scope="module")
def samples(tmp_path_factory, load):
    """Small real ARC, MMLU and StrategyQA files: three datasets, so leave-one-out pools two."""
    folder = tmp_path_factory.mktemp("pooled-data")
    return {
        "arc": write_jsonl(folder / "arc-s.jsonl", load("arc").records[::13]),
        "mmlu": write_jsonl(folder / "mmlu-s.jsonl", load("mmlu").records[::4]),
        "sqa": write_jsonl(folder / "sqa-s.jsonl", load("strategyqa").records[::5]),
    }


@pytest.fixture(scope="module")
def pooled_sweep(samples, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pooled")
    tasks = [f"{samples['arc']}:grade", f"{samples['sqa']}:steps"]
    args = [
        "sweep", "--tasks", *tasks, "+".join(tasks), "--model", str(tiny_model_dir),
        "--probe-preset", "validated", "--layers", "1", "2", "--no-mid-last", *SHARED,
        "--cache-dir", str(root / "act"), "--runs-dir", str(root / "runs"),
        "--plots-dir", str(root / "plots"),
    ]  # fmt: skip
    assert main(args) == 0
    (run_dir,) = (root / "runs").glob("layer_sweep-*")
    return root, run_dir, tasks


def test_the_sweep_takes_a_pooled_training_task(pooled_sweep):
    root, run_dir, tasks = pooled_sweep
    store = RunStore(run_dir)
    pooled = PooledSpec.parse("+".join(tasks))
    table = store.task(pooled.slug)
    assert table["components"] == tasks
    arc, sqa = (store.task(s) for s in (p.slug for p in pooled.parts))
    n_arc = len(arc["items"]["id"])
    assert (
        table["items"]["answer_index"]
        == arc["items"]["answer_index"] + (sqa["items"]["answer_index"])
    )
    # the pooled zero-shot is its components' zero-shot, item for item (one cache, two reads)
    joined = store.read(PartKey(pooled.slug, "zero_shot", "none", 0)).arrays["correct"]
    own = [store.read(PartKey(p.slug, "zero_shot", "none", 0)).arrays["correct"]
           for p in pooled.parts]  # fmt: skip
    assert np.array_equal(joined, np.concatenate(own))
    # a pooled probe trained on equal shares, and its stored predictions are the cache's
    # states of both datasets scored by its stored weights
    part = store.read(PartKey(pooled.slug, "mc_linear@2", "easy", 1))
    train = part.arrays["train"]
    assert (train < n_arc).sum() == (train >= n_arc).sum() == 6
    results = load_run(run_dir)
    probe = results.probe("+".join(tasks), "mc_linear@2", "easy", 1)
    data = []
    for stored in (arc, sqa):
        with ActivationCache(stored["cache"]["path"]) as cache:
            rows = cache.rows_of(stored["items"]["id"])
            data.append((answer_end_features(cache, 2, rows), cache.item("choice_mask")[rows]))
    width = max(m.shape[1] for _, m in data)
    states = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s, _ in data])
    mask = np.concatenate([np.pad(m, ((0, 0), (0, width - m.shape[1]))) for _, m in data])
    answers = np.array(table["items"]["answer_index"])
    items = part.arrays["item"]
    fresh = probe.predict(ProbeData(tuple(map(str, items)), states[items], mask[items],
                                    answers[items]))  # fmt: skip
    assert np.array_equal(fresh.predictions(), part.arrays["prediction"])
    # the report tabulates the pooled task as any task
    summary = (run_dir / "summary.txt").read_text()
    assert "+".join(tasks) in summary


@pytest.mark.slow
def test_transfer_matrix_leave_one_dataset_out_rows(samples, tiny_model_dir, tmp_path):
    tasks = [f"{samples['arc']}:grade", f"{samples['mmlu']}:level", f"{samples['sqa']}:steps"]
    args = [
        "transfer-matrix", "--tasks", *tasks, "--model", str(tiny_model_dir), "--layer", "2",
        *SHARED, "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
    ]  # fmt: skip
    assert main(args) == 0
    (folder,) = (tmp_path / "runs").glob("layer_sweep-*/studies/transfer_matrix-*")
    rows = list(csv.DictReader((folder / "transfer_matrix.csv").open()))
    pooled = [r for r in rows if r["held_out"]]
    assert {r["held_out"] for r in pooled} == set(tasks)
    assert len(pooled) == 3 * 3 * 3  # held out x train_on x tested on
    for row in pooled:
        assert row["train_task"] == "+".join(t for t in tasks if t != row["held_out"])
    # a held-out cell is the pooled probe's parts scored on B's hard test set
    run = load_run(folder)
    held = tasks[1]
    cell = next(r for r in pooled if r["held_out"] == held and r["test_task"] == held
                and r["train_on"] == "easy")  # fmt: skip
    scored = run.summary[(run.summary["task"] == cell["train_task"])
                         & (run.summary["test_task"] == held)
                         & (run.summary["train_on"] == "easy")]  # fmt: skip
    assert len(scored) == 2  # seeds
    assert float(cell["accuracy"]) == pytest.approx(scored["accuracy"].mean())
    assert "all but" in (folder / "summary.txt").read_text()
