"""Probe directions, known answers: probes fitted on planted signals and stored as a run would
store them; the same planted direction in two "datasets" gives cosine ~ 1, orthogonal ones ~ 0,
and the seed-to-seed reference is what two draws of one condition agree on."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from test_cli_config import truthprobe

from truthprobe.directions import direction_rows, mean_cosine, raw_direction
from truthprobe.probes import ProbeData, fit_many, preset_probes
from truthprobe.runstore import PartKey, RunStore

D = 48


def planted(direction: np.ndarray, n: int, seed: int, strength: float = 1.0) -> ProbeData:
    """Choices with anisotropic noise (so w / sigma matters); the correct one shifted by
    Sigma @ direction, so `direction` is the best linear score in activation space."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, D)
    states = (rng.normal(size=(n, 4, D)) * scales).astype(np.float32)
    answers = rng.integers(0, 4, n)
    states[np.arange(n), answers] += (strength * direction * scales**2).astype(np.float32)
    return ProbeData(tuple(map(str, range(n))), states, np.ones((n, 4), bool), answers)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def directions():
    rng = np.random.default_rng(0)
    shared = unit(rng.normal(size=D))
    other = unit(rng.normal(size=D))
    orthogonal = unit(other - (other @ shared) * shared)
    return shared, orthogonal


def store_probes(run_dir, task: str, by_stratum: dict[str, np.ndarray], seeds=(0, 1, 2)):
    """Fit the validated probe on planted data per stratum and seed; store parts as a run."""
    store = RunStore(run_dir)
    slug = task.replace(":", "-")
    store.write_task(slug, {"task": task, "items": {"id": [], "role": []}})
    grid = preset_probes("mc_linear", "validated")
    draws = [(stratum, seed) for stratum in by_stratum for seed in seeds]
    data = [
        planted(by_stratum[stratum], 1500, seed=hash((task, stratum, seed)) % 2**32)
        for stratum, seed in draws
    ]
    fits = fit_many(grid[-1:], data, [seed for _, seed in draws])  # l2 = 0.01, 100 steps, batched
    for (stratum, seed), (fitted,) in zip(draws, fits, strict=True):
        meta = {"family": "mc_linear", "layer": 3, "train_on": stratum, "seed": seed}
        store.put(PartKey(slug, "mc_linear@3", stratum, seed), fitted.arrays(), meta)


def test_the_raw_direction_undoes_standardisation(directions):
    shared, _ = directions
    data = planted(shared, 3000, seed=1)
    fitted = fit_many(preset_probes("mc_linear", "validated")[-1:], [data], [0])[0][0]
    assert raw_direction(fitted.arrays()) @ shared > 0.95
    z_space = unit(fitted.weight.astype(np.float64))
    assert z_space @ shared < raw_direction(fitted.arrays()) @ shared  # sigma matters here


def test_shared_directions_have_cosine_one_and_orthogonal_ones_zero(directions, tmp_path):
    shared, orthogonal = directions
    store_probes(tmp_path, "a:x", {"easy": shared, "hard": shared, "all": orthogonal})
    store_probes(tmp_path, "b:y", {"easy": shared, "hard": orthogonal, "all": orthogonal})
    rows = {(r["task"], r["comparison"], r["pair"]): r for r in direction_rows(tmp_path)}
    assert rows["a:x", "strata", "easy~hard"]["cosine"] > 0.9
    assert abs(rows["a:x", "strata", "easy~all"]["cosine"]) < 0.15
    assert rows["a:x", "seeds", "easy~easy"]["n_pairs"] == 3  # seed pairs 01, 02, 12
    assert rows["a:x", "strata", "easy~hard"]["n_pairs"] == 9  # every seed of one x the other
    assert rows["a:x~b:y", "tasks", "easy"]["cosine"] > 0.9  # same signal, two "datasets"
    assert abs(rows["a:x~b:y", "tasks", "hard"]["cosine"]) < 0.15
    assert rows["a:x~b:y", "tasks", "all"]["cosine"] > 0.9  # both trained on `orthogonal`


def test_mean_cosine_counts_pairs():
    a = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    assert mean_cosine(a) == (0.0, 0.0, 1)
    mean, sd, n = mean_cosine(a, [np.array([1.0, 0.0])])
    assert (mean, sd, n) == (0.5, 0.5, 2)


@pytest.mark.slow
def test_directions_versus_4bit_compares_two_runs_of_the_same_items(
    tiny_model_dir, arc_sample, tmp_path
):
    """bitsandbytes quantization runs on CPU: the same sweep under NF4 weights lands in its own
    cache and run, and the two runs' probes are compared item for item."""
    args = [
        "directions", "--tasks", f"{arc_sample}:grade", "--model", str(tiny_model_dir),
        "--versus-quantization", "4bit",
        "--n-train", "6", "--seeds", "2", "--validation-size", "4",
        "--max-per-stratum", "20", "--n-boot", "50", "--layers", "1", "2", "--no-mid-last",
        "--probe-preset", "validated", "--cache-dir", str(tmp_path / "act"),
        "--runs-dir", str(tmp_path / "runs"), "--plots-dir", str(tmp_path / "plots"),
        "--no-progress",
    ]  # fmt: skip
    run = truthprobe(*args)
    assert run.returncode == 0, run.stderr
    assert "two quantizations" in run.stdout
    models = {p.name.split("-")[-2]: p.name for p in (tmp_path / "act").iterdir()}
    assert set(models) == {"none", "4bit"}, models  # one cache folder per quantization
    (csv_path,) = [p for p in (tmp_path / "runs").rglob("directions.csv")]
    rows = list(csv.DictReader(csv_path.open()))
    cosines = [r for r in rows if r["comparison"] == "quantization"]
    assert {int(r["layer"]) for r in cosines} == {1, 2} and all(int(r["n"]) == 2 for r in cosines)
    assert all(-1 <= float(r["value"]) <= 1 for r in cosines)
    # the disjoint-draw reference: parts of the run (3 pairs of disjoint easy halves per layer)
    disjoint = [r for r in rows if r["pair"] == "easy~easy disjoint"]
    assert {int(r["layer"]) for r in disjoint} == {1, 2} and all(r["n"] == "3" for r in disjoint)
    from truthprobe.runstore import load_run

    parts = load_run(csv_path.parent).summary
    halves = parts[parts["train_on"].str.startswith("easy-disjoint-")]
    assert len(halves) == 2 * 3 * 2 and set(halves["n_train"]) == {6}
    accuracy = {r["pair"] for r in rows if r["comparison"] == "quantization_accuracy"}
    own = models["none"].split("-")[-1]  # the unquantized run is named by its dtype
    assert accuracy == {f"{a} on {b}" for a in (own, "4bit") for b in (own, "4bit")}
    # the run folder and its caches moved elsewhere: the caches are found again by identity
    import shutil

    from truthprobe.directions import write_directions

    moved = tmp_path / "moved"
    shutil.move(tmp_path / "runs", moved / "runs")
    shutil.move(tmp_path / "act", moved / "activations")
    run_dir = next((moved / "runs").glob("*/config.json")).parent  # either quantization's
    text = write_directions(run_dir, tmp_path / "p2", cache_dir=moved / "activations")
    rows = list(csv.DictReader((run_dir / "directions.csv").open()))
    assert "table:" in text and any(r["comparison"] == "rescaled" for r in rows)
    # a cache folder that does not hold it: one message naming the identity and the flag
    from truthprobe.activations import CacheError

    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match=r"no activation cache with identity .* --cache-dir"):
        write_directions(run_dir, tmp_path / "p3", cache_dir=tmp_path / "empty")
