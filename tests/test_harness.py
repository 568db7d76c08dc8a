"""The one harness, run store and report, on the tiny model and real ARC / GSM8k records."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from conftest import write_jsonl

from truthprobe.activations import ActivationCache
from truthprobe.cli import main
from truthprobe.comparison import BaselinesConfig, run_baselines
from truthprobe.configs import CacheConfig, DataConfig, ModelConfig, OutputConfig
from truthprobe.evaluate import SplitConfig
from truthprobe.methods import ProbeSettings, QLoRASettings
from truthprobe.methods.base import answer_end_features
from truthprobe.methods.settings import CoTSettings, ICLSettings
from truthprobe.probes import ProbeData
from truthprobe.report import collect
from truthprobe.runstore import PartKey, RunStore, load_run
from truthprobe.sweep import SweepConfig, layer_sweep

SPLIT = SplitConfig(n_train=12, seeds=2, validation_size=10)


@pytest.fixture(scope="module")
def common(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    return dict(
        model=ModelConfig(name=str(tiny_model_dir)),
        data=DataConfig(max_per_stratum=0),
        cache=CacheConfig(cache_dir=str(root / "act"), batch_size=4),
        output=OutputConfig(
            runs_dir=str(root / "runs"), plots_dir=str(root / "plots"), n_boot=200, progress=False
        ),
    )


@pytest.fixture(scope="module")
def sweep(arc_sample, common):
    config = SweepConfig(
        tasks=(f"{arc_sample}:grade",),
        probe=ProbeSettings(probes=("mc_linear", "logistic")),
        split=SPLIT,
        **common,
    )
    return config, layer_sweep(config)


def test_sweep_stores_every_part(sweep):
    config, summary = sweep
    # zero-shot (2) + (3 layers and mid+last) x kinds x train_on x seeds
    assert summary.computed == 2 + 4 * 2 * 3 * 2
    assert summary.reused == summary.stale == 0
    with ActivationCache(summary.caches[config.tasks[0]]) as cache:
        ids = RunStore(summary.run_dir).task(RunStore(summary.run_dir).task_slugs()[0])["items"]
        assert np.array_equal(np.flatnonzero(cache.done_rows()), np.sort(cache.rows_of(ids["id"])))
    assert list(summary.rows_extracted.values()) == [342] and len(ids["id"]) == 342
    assert summary.run_dir == config.harness().run_dir()
    meta = json.loads((summary.run_dir / "config.json").read_text())
    assert meta["model_fingerprint"]["revision"].startswith("files-sha256:")
    provenance = meta["provenance"]
    assert provenance["git"]["commit"] and provenance["libraries"]["torch"]
    assert provenance["argv"] and provenance["started"] and provenance["hardware"]["cpu_count"]
    assert meta["datasets"][config.tasks[0]]["content_sha256"]


def test_sweep_and_baselines_give_identical_per_item_results(sweep, arc_sample, common):
    """The probe and zero-shot parts do not depend on which configuration ran them."""
    config, summary = sweep
    baselines = run_baselines(
        BaselinesConfig(tasks=config.tasks, methods=("probe",), split=SPLIT, **common)
    )
    assert baselines.run_dir != summary.run_dir
    assert list(baselines.rows_extracted.values()) == [0]  # the sweep's cache serves it
    a, b = load_run(summary.run_dir).items, load_run(baselines.run_dir).items
    shared = sorted(set(b["method"]))
    probes = ["mc_linear@0", "mc_linear@1", "mc_linear@2", "mc_linear@mid+last"]
    assert shared == [*probes, "zero_shot", "zero_shot_norm"]
    a = a[a["method"].isin(shared)].sort_values(["method", "train_on", "seed", "item_id"])
    b = b.sort_values(["method", "train_on", "seed", "item_id"])
    assert len(a) == len(b) > 0
    for column in a.columns:
        if column == "probs":
            assert all(np.array_equal(x, y) for x, y in zip(a[column], b[column], strict=True))
        else:
            assert list(a[column]) == list(b[column]), column


def test_four_arc_measures_share_one_cache_and_extract_nothing_new(
    tiny, arc_sample, common, tmp_path
):
    """`truthprobe extract` once; a sweep over grade, Bloom, difficulty and depth of knowledge
    then extracts 0 rows, all from the one file."""
    from truthprobe.activations import ExtractConfig, extract

    cache = dataclasses.replace(common["cache"], cache_dir=str(tmp_path / "act"))
    extracted = extract(
        ExtractConfig(dataset=str(arc_sample), model=common["model"], cache=cache, progress=False),
        loaded=tiny,
    )
    assert extracted.rows_extracted == 599
    measures = ("grade", "bloom", "difficulty", "depth_of_knowledge")
    config = SweepConfig(
        tasks=tuple(f"{arc_sample}:{m}" for m in measures),
        split=SplitConfig(n_train=6, seeds=1, validation_size=10),
        **{**common, "cache": cache},
    )
    summary = layer_sweep(config)
    assert summary.rows_extracted == dict.fromkeys(config.tasks, 0)
    assert set(summary.caches.values()) == {str(extracted.path)}
    assert [p.name for p in (tmp_path / "act").rglob("*.h5")] == [extracted.path.name]


def _of_part(frame, key: PartKey):
    """The rows of a `load_run` table that belong to one stored part."""
    same = (frame["method"] == key.method) & (frame["train_on"] == key.train_on)
    return frame[same & (frame["seed"] == key.seed)]


def test_load_run_round_trips(sweep):
    config, summary = sweep
    results = load_run(summary.run_dir)
    store = RunStore(summary.run_dir)
    slug = store.task_slugs()[0]
    table = store.task(slug)["items"]
    n_evaluated = table["role"].count("test") + table["role"].count("validation")
    zero_shot = results.summary["family"].str.startswith("zero_shot").sum()  # every item
    probes = summary.computed - zero_shot  # test and validation items
    assert len(results.items) == probes * n_evaluated + zero_shot * len(table["id"])
    assert len(results.summary) == summary.computed
    for key in list(store.keys(slug))[::7]:
        part = store.read(key)
        rows = _of_part(results.items, key)
        assert list(rows["item_id"]) == [table["id"][i] for i in part.arrays["item"]]
        assert list(rows["correct"]) == list(part.arrays["correct"].astype(bool))
        assert np.array_equal(np.stack(rows["probs"]), part.arrays["probs"])
        line = _of_part(results.summary, key).iloc[0]
        test = rows[rows["role"] == "test"]
        assert line["accuracy"] == test["correct"].mean() and line["n_test"] == len(test)
        confidence = np.stack(test["probs"]).max(1)
        assert line["ece"] == pytest.approx(binned_ece(confidence, test["correct"]), abs=1e-6)
    assert (results.items["prediction"] >= 0).all()


def binned_ece(confidence, correct, bins: int = 10) -> float:
    """ECE written out another way: bin edges from `linspace`, a loop over bins."""
    confidence = np.ravel(confidence).astype(float)
    correct = np.ravel(correct).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        here = which == b
        if here.any():
            total += here.sum() * abs(correct[here].mean() - confidence[here].mean())
    return total / len(confidence)


def test_report_tables_calibration_at_the_chosen_layer(sweep):
    """table.csv's ECE of each pool is the ECE of the chosen layer's parts, items and seeds
    pooled, inside an interval; calibration.csv holds its reliability bins."""
    from truthprobe.report import write_report

    config, summary = sweep
    write_report(summary.run_dir, config.output.plots_dir)
    items = load_run(summary.run_dir).items
    test = items[items["role"] == "test"]
    table = list(csv.DictReader((summary.run_dir / "table.csv").open()))
    bins = list(csv.DictReader((summary.run_dir / "calibration.csv").open()))
    for row in table:
        for on in ("easy", "hard", "all"):
            part = test[(test["family"] == row["method"]) & (test["layer"] == int(row["layer"]))
                        & (test["train_on"] == on)]  # fmt: skip
            confidence = np.stack(part["probs"]).max(1)
            assert float(row[f"ece_{on}"]) == pytest.approx(
                binned_ece(confidence, part["correct"]), abs=1e-6
            )
            assert float(row[f"overconfidence_{on}"]) == pytest.approx(
                confidence.mean() - part["correct"].mean(), abs=1e-6
            )
            low, high = float(row[f"ece_{on}_low"]), float(row[f"ece_{on}_high"])
            assert low < high
            mine = [b for b in bins if b["method"] == row["method"] and b["train_on"] == on]
            assert len(mine) == 10 and sum(int(b["n"]) for b in mine) == len(part)
        for on in ("easy", "hard"):  # the table's AUROC: its parts' own, over seeds
            parts = load_run(summary.run_dir).summary
            mine = parts[(parts["family"] == row["method"]) & (parts["train_on"] == on)
                         & (parts["layer"] == int(row["layer"]))]  # fmt: skip
            assert float(row[f"auroc_{on}"]) == pytest.approx(mine["auroc"].mean())
        floor = test[test["family"] == "zero_shot"]
        assert float(row["ece_unsupervised"]) == pytest.approx(
            binned_ece(np.stack(floor["probs"]).max(1), floor["correct"]), abs=1e-6
        )


def test_zero_shot_parts_are_the_cached_log_likelihoods(sweep):
    config, summary = sweep
    results = load_run(summary.run_dir)
    zero = results.items[results.items["method"] == "zero_shot"]
    with ActivationCache(summary.caches[config.tasks[0]]) as cache:
        rows = cache.rows_of(list(zero["item_id"]))
        logprob = cache.score("choice_logprob", rows)
        mask = cache.item("choice_mask")[rows]
    expected = np.where(mask, logprob, -np.inf).argmax(1)
    assert list(zero["prediction"]) == list(expected)
    assert list(zero["correct"]) == list(expected == zero["answer_index"].to_numpy())


def test_saved_probe_weights_reproduce_the_stored_predictions(sweep):
    config, summary = sweep
    results = load_run(summary.run_dir)
    store = RunStore(summary.run_dir)
    slug = store.task_slugs()[0]
    table = store.task(slug)["items"]
    checked = 0
    with ActivationCache(summary.caches[config.tasks[0]]) as cache:
        for key in store.keys(slug):
            part = store.read(key)
            if part.probe_arrays is None:
                continue
            ids = [table["id"][i] for i in part.arrays["item"]]
            rows = cache.rows_of(ids)
            data = ProbeData(
                tuple(ids),
                answer_end_features(cache, part.meta["layer"], rows),
                cache.item("choice_mask")[rows],
                np.array([table["answer_index"][i] for i in part.arrays["item"]]),
            )
            scorer = results.probe(config.tasks[0], key.method, key.train_on, key.seed)
            recomputed = scorer.predict(data).probs.astype(np.float32)
            assert np.array_equal(recomputed, part.arrays["probs"]), key
            checked += 1
    assert checked == 4 * 2 * 3 * 2  # (3 layers and mid+last) x kinds x train_on x seeds


def test_resume_recomputes_only_missing_and_stale_parts(sweep, monkeypatch):
    config, summary = sweep
    store = RunStore(summary.run_dir)
    keys = list(store.keys())
    probe_parts = [k for k in keys if "@" in k.method]
    missing, stale = probe_parts[5], probe_parts[9]  # two probes fitted with other draws
    before = store.read(missing).arrays
    store.path(missing).unlink()
    part = store.read(stale)
    store.put(stale, part.arrays, {**part.meta, "fingerprint": "made-by-other-code"})
    stamps = {k: store.path(k).stat().st_mtime_ns for k in keys if k not in (missing, stale)}
    again = layer_sweep(config)
    assert (again.computed, again.stale, again.reused) == (2, 1, len(keys) - 2)
    assert all(store.path(k).stat().st_mtime_ns == t for k, t in stamps.items())
    after = store.read(missing).arrays  # refitted on resume: the same bytes
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)

    import truthprobe.provenance

    monkeypatch.setattr(truthprobe.provenance, "code_version", lambda: "9.9.9+another")
    other_code = layer_sweep(config)
    assert other_code.stale == other_code.computed == len(keys) and other_code.reused == 0


def test_run_directory_is_named_by_what_changes_results(sweep, common):
    config, _ = sweep
    same = [
        dataclasses.replace(config, tasks=("arc:grade", "mmlu:level")),
        dataclasses.replace(config, probe=ProbeSettings(probes=("ccs",), layers=(1,))),
        dataclasses.replace(config, cache=CacheConfig(config.cache.cache_dir, batch_size=32)),
        dataclasses.replace(config, output=dataclasses.replace(config.output, n_boot=5)),
    ]
    assert {c.harness().run_hash() for c in same} == {config.harness().run_hash()}
    differ = [
        dataclasses.replace(config, split=SplitConfig(n_train=13, seeds=2, validation_size=10)),
        dataclasses.replace(config, data=DataConfig(max_per_stratum=50)),
        dataclasses.replace(config, cache=CacheConfig(config.cache.cache_dir, 4, "float32")),
        dataclasses.replace(config, model=ModelConfig(config.model.single.name, dtype="float32")),
    ]
    hashes = {c.harness().run_hash() for c in differ}
    assert len(hashes) == 4 and config.harness().run_hash() not in hashes


def test_report_renders_a_sweep(sweep, capsys, tmp_path):
    config, summary = sweep
    assert main(["report", str(summary.run_dir), "--plots-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mc_linear" in out and "logistic" in out and "zero-shot" in out
    first = (summary.run_dir / "sgr.csv").read_text()
    assert main(["report", str(summary.run_dir), "--plots-dir", str(tmp_path)]) == 0
    assert (summary.run_dir / "sgr.csv").read_text() == first  # reproducible
    pngs = sorted(p.name for p in (tmp_path / summary.run_dir.name).glob("*.png"))
    slug = RunStore(summary.run_dir).task_slugs()[0]  # a file task: never its path
    assert slug.startswith("arc-sample-") and slug.endswith("-grade") and "/" not in slug
    assert pngs == sorted(
        [
            f"{slug}-{kind}-{what}.png"
            for kind in ("logistic", "mc_linear")
            for what in ("accuracy", "sgr")
        ]
        + ["sgr-bars.png", "families.png", "reliability-logistic.png", "reliability-mc_linear.png"]
    )
    (results,) = collect(summary.run_dir)  # the chance line: mean 1 / choices over test items
    items = RunStore(summary.run_dir).task(slug)["items"]
    test = [n for n, role in zip(items["n_choices"], items["role"], strict=True) if role == "test"]
    assert test and abs(results.chance - np.mean([1 / n for n in test])) < 1e-12
    pdfs = sorted(p.name for p in (tmp_path / summary.run_dir.name).glob("*.pdf"))
    assert pdfs == [name.replace(".png", ".pdf") for name in pngs]  # vector copies beside


def test_baselines_run_every_method_and_the_report_tabulates_them(
    arc_sample, load, common, tmp_path, capsys
):
    gsm8k = write_jsonl(tmp_path / "gsm8k-sample.jsonl", load("gsm8k").records[::50])
    config = BaselinesConfig(
        tasks=(f"{arc_sample}:grade", f"{gsm8k}:steps"),
        icl=ICLSettings(k=2),
        cot=CoTSettings(max_new_tokens=6),
        qlora=QLoRASettings(qlora_n_train=3, qlora_max_updates=1),
        split=SplitConfig(n_train=4, seeds=1, validation_size=10, max_test=3),
        **common,
    )
    summary = run_baselines(config)
    store = RunStore(summary.run_dir)
    model = json.loads((summary.run_dir / "config.json").read_text())["model_fingerprint"]
    # one model per table: every part (QLoRA's included) names the run's weights
    assert all(store.meta(k)["model"] == model for s in store.task_slugs() for k in store.keys(s))
    methods = {slug: sorted({k.method for k in store.keys(slug)}) for slug in store.task_slugs()}
    arc, gsm = sorted(methods, key=lambda s: not s.startswith("arc"))
    probes = ["mc_linear@0", "mc_linear@1", "mc_linear@2", "mc_linear@mid+last"]
    assert methods[arc] == ["icl", *probes, "qlora"] + [
        "zero_shot",
        "zero_shot_norm",
    ]
    assert methods[gsm] == ["icl+cot", "qlora+cot", "zero_shot+cot"]  # free-form: no probe
    completions = store.path(PartKey(gsm, "icl+cot", "easy", 0)).with_suffix(".jsonl")
    rows = [json.loads(line) for line in completions.read_text().splitlines()]
    assert len(rows) == 3 and {"completion", "predicted", "gold", "correct"} <= set(rows[0])
    assert any((summary.run_dir / "adapters").iterdir())
    assert main(["report", str(summary.run_dir)]) == 0
    out = capsys.readouterr().out
    for name in ("icl ", "qlora ", "mc_linear", "icl+cot", "qlora+cot"):
        assert name in out
    results = load_run(summary.run_dir)
    assert set(results.summary["n_test"]) == {3}
    table = list(csv.DictReader((summary.run_dir / "table.csv").open()))
    assert {r["weights"] for r in table} == {f"{model['name']} {model['dtype']}"}
    assert set(results.summary["weights"]) == {r["weights"] for r in table}  # load_run too
    assert all(r["weights"] == r["unsupervised_weights"] for r in table) and "*" not in out


def test_qlora_on_other_weights_is_named_in_its_parts_and_the_table(arc_sample, common, capsys):
    """--qlora-quantization 8bit trains QLoRA on an LLM.int8 copy: its parts carry that
    fingerprint (so they are not reused for the run's own weights), and the table marks the
    row whose SGR mixes two models."""
    config = BaselinesConfig(
        tasks=(f"{arc_sample}:grade",),
        methods=("qlora",),
        qlora=QLoRASettings(qlora_n_train=3, qlora_quantization="8bit", qlora_max_updates=1),
        split=SplitConfig(n_train=4, seeds=1, validation_size=10, max_test=3),
        **common,
    )
    summary = run_baselines(config)
    store = RunStore(summary.run_dir)
    model = json.loads((summary.run_dir / "config.json").read_text())["model_fingerprint"]
    parts = {k.method: store.meta(k)["model"] for k in store.keys(store.task_slugs()[0])}
    assert parts.pop("qlora") == {**model, "quantization": "8bit"}
    assert set(map(json.dumps, parts.values())) == {json.dumps(model)}  # zero-shot: the run's
    assert main(["report", str(summary.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"qlora           8bit {model['dtype']}*" in out
    assert f"on {model['name']} 8bit {model['dtype']}, zero-shot on {model['name']}" in out


def test_directions_of_a_sweep_recompute_its_accuracies_from_the_cache(sweep, tmp_path):
    """`rescaled` rows rebuild each easy / hard probe from its saved arrays and score the hard
    test items read afresh from the cache: they must equal the run's own accuracies."""
    import csv

    from truthprobe.directions import write_directions

    config, summary = sweep
    text = write_directions(summary.run_dir, tmp_path)
    assert "easy~hard" in text and (tmp_path / summary.run_dir.name / "directions.png").is_file()
    rows = list(csv.DictReader((summary.run_dir / "directions.csv").open()))
    table = load_run(summary.run_dir).summary
    for train_on in ("easy", "hard"):
        for layer in (0, 2, -2):
            mine = table[(table.family == "mc_linear") & (table.layer == layer)]
            expected = mine[mine.train_on == train_on]["accuracy"].mean()
            got = next(
                float(r["value"]) for r in rows
                if r["comparison"] == "rescaled" and r["pair"] == train_on
                and int(r["layer"]) == layer and r["family"] == "mc_linear"
            )  # fmt: skip
            assert abs(got - expected) < 1e-12, (train_on, layer)
    seeds = [r for r in rows if r["comparison"] == "seeds" and r["family"] == "mc_linear"]
    assert seeds and all(int(r["n"]) == 1 for r in seeds)  # 2 seeds: one pair


def test_a_run_against_itself_across_quantizations_is_identical(sweep):
    """Known answer for the quantization comparison: a run compared with itself has cosine 1
    and its probes' accuracy on the "other" states equals their own, which equals the table's."""
    from truthprobe.directions import quantization_rows

    _, summary = sweep
    rows = quantization_rows(summary.run_dir, summary.run_dir)
    table = load_run(summary.run_dir).summary
    cosines = [r for r in rows if r["comparison"] == "quantization"]
    assert cosines and all(abs(r["value"] - 1) < 1e-9 for r in cosines)
    assert {r["pair"].split(":")[0] for r in cosines} == {"easy", "hard", "all"}
    for r in (r for r in rows if r["comparison"] == "quantization_accuracy"):
        mine = table[(table.family == "mc_linear") & (table.layer == r["layer"])]
        assert abs(r["value"] - mine[mine.train_on == "easy"]["accuracy"].mean()) < 1e-12
