"""Model-based hardness: known answers for zero-shot and probe MDL, cross-fitting, and the
scores stored beside a cache and used by `truthprobe sweep --tasks FILE:mdl`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_cli_config import truthprobe
from test_processes import error_lines

from truthprobe.activations import ActivationCache
from truthprobe.mdl import fold_assignment, model_scores, probe_mdl, scores_path, zero_shot_mdl

D = 32


def planted(n: int, seed: int = 0):
    """Half the items carry the planted signal on their correct choice, half carry none."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=D)
    direction /= np.linalg.norm(direction)
    states = rng.normal(size=(n, 4, D)).astype(np.float32)
    answers = rng.integers(0, 4, n)
    signal = np.arange(n) % 2 == 0
    states[np.flatnonzero(signal), answers[signal]] += (3 * direction).astype(np.float32)
    return states, np.ones((n, 4), bool), answers, direction


def test_zero_shot_mdl_is_one_minus_the_gold_probability():
    logprob = np.log(np.array([[0.5, 0.25, 0.25, 1.0], [0.1, 0.1, 0.8, 1.0]]))
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    probs_second = np.array([0.1, 0.1, 0.8, 1.0]) / 2.0
    np.testing.assert_allclose(
        zero_shot_mdl(logprob, mask, np.array([0, 2])), [0.5, 1 - probs_second[2]]
    )


def test_probe_mdl_is_lower_where_the_planted_probe_is_right_with_margin():
    states, mask, answers, direction = planted(800)
    mdl = probe_mdl(states, mask, answers)
    scores = states @ direction
    gold = scores[np.arange(len(answers)), answers]
    rival = np.where(np.eye(4, dtype=bool)[answers], -np.inf, scores).max(1)
    right = gold - rival > 1.0
    wrong = gold < rival
    assert right.sum() > 100 and wrong.sum() > 100
    assert mdl[right].mean() + 0.2 < mdl[wrong].mean()
    assert ((mdl >= 0) & (mdl <= 1)).all()


def test_probe_mdl_is_cross_fitted():
    """An item's label reaches only probes that score other folds: changing it leaves every
    score of its own fold unchanged and moves scores in the other folds."""
    states, mask, answers, _ = planted(200)
    before = probe_mdl(states, mask, answers)
    changed = answers.copy()
    changed[7] = (changed[7] + 1) % 4
    after = probe_mdl(states, mask, changed)
    fold = fold_assignment(200, 5, np.random.default_rng(0))
    same = fold == fold[7]
    same[7] = False  # its own score reads the new label
    np.testing.assert_array_equal(before[same], after[same])
    assert not np.array_equal(before[~same], after[~same])


def model_rated_sweep(
    measures: tuple[str, ...], source: Path, n: int, model: Path, tmp_path: Path
) -> tuple[Path, list[str]]:
    """The first `n` records of `source` as a file (a model-based measure rates every record of
    the cache: keep it small) and the tiny-model sweep arguments for its `measures`."""
    lines = source.read_text().splitlines()[:n]
    sample = tmp_path / "arc-sample.jsonl"
    sample.write_text("\n".join(lines) + "\n")
    args = [
        "sweep", "--tasks", *(f"{sample}:{m}" for m in measures),
        "--model", str(model), "--n-train", "12", "--seeds", "2",
        "--validation-size", "10", "--max-per-stratum", "0", "--n-boot", "100",
        "--layers", "1", "--no-mid-last", "--probe-preset", "validated",
        "--cache-dir", str(tmp_path / "act"), "--runs-dir", str(tmp_path / "runs"),
        "--plots-dir", str(tmp_path / "plots"), "--no-progress",
    ]  # fmt: skip
    return sample, args


def data_summary(sample: Path, measure: str, cache_dir: Path):
    """`truthprobe data summary` of a model-based measure, which must succeed."""
    summary = truthprobe(
        "data", "summary", "--dataset", str(sample), "--measure", measure,
        "--cache-dir", str(cache_dir),
    )  # fmt: skip
    assert summary.returncode == 0, summary.stderr
    return summary


@pytest.mark.slow
def test_a_sweep_rates_by_mdl_and_stores_the_scores_beside_the_cache(
    tiny_model_dir, arc_sample, tmp_path
):
    arc_sample, args = model_rated_sweep(
        ("mdl", "probe_mdl"), arc_sample, 150, tiny_model_dir, tmp_path
    )
    first = truthprobe(*args)
    assert first.returncode == 0, first.stderr
    cache = next((tmp_path / "act").rglob("*.h5"))
    stored = scores_path(cache)
    with np.load(stored) as f:
        assert {"mdl", "probe_mdl"} <= set(f.files) and int(f["probe_mdl_layer"]) == 1
    stamp = stored.stat().st_mtime_ns
    with ActivationCache(cache) as opened:  # the cache did not change: read, not redone
        again = model_scores(opened, "probe_mdl")
    assert stored.stat().st_mtime_ns == stamp and len(again) == 150
    assert "arc-sample" in first.stdout and ":mdl" in first.stdout and ":probe_mdl" in first.stdout
    assert "probe_mdl ~ grade" in first.stdout and "mdl ~ bloom" in first.stdout  # per dataset
    summary = data_summary(arc_sample, "probe_mdl", tmp_path / "act")
    assert "Spearman with grade" in summary.stdout and "hard" in summary.stdout

    # damaged (issue 20, item 5): one flipped byte in the stored scores is named in one line by
    # `data summary`, and the next sweep computes the scores again, never reading them damaged
    data = bytearray(stored.read_bytes())
    data[data.index(b"probe_mdl.npy") + 300] ^= 0x01
    stored.write_bytes(bytes(data))
    damaged = truthprobe(
        "data", "summary", "--dataset", str(arc_sample), "--measure", "probe_mdl",
        "--cache-dir", str(tmp_path / "act"),
    )  # fmt: skip
    lines = error_lines(damaged.stderr)
    assert damaged.returncode == 2 and len(lines) == 1 and f"{stored} is damaged" in lines[0]
    rerun = truthprobe(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{stored}: damaged" in rerun.stderr and "computed again" in rerun.stderr
    with ActivationCache(cache) as opened:
        assert model_scores(opened, "probe_mdl") == again
    data_summary(arc_sample, "probe_mdl", tmp_path / "act")
