"""Figures, drawn from result tables only (lists of row dicts), never from models or caches.

Colours are Okabe and Ito's colour-blind-safe palette; every figure is written as a PNG (for
the README and quick looks) and a PDF beside it (vector, for papers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from truthprobe.methods.base import MID_LAST


class _Pyplot:
    """`matplotlib.pyplot` (headless), imported when the first figure is drawn: the command
    line imports every command's config, and a second of matplotlib for `--help` or a bad flag
    is a second too many."""

    def __getattr__(self, name: str) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()

#: Okabe-Ito: distinguishable under the common colour-vision deficiencies, and in greyscale.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442")
COLORS = {"easy": OKABE_ITO[0], "hard": OKABE_ITO[1], "all": OKABE_ITO[2]}
#: Lines that are none of the strata (SGR, a rescaled direction, a second quantization).
ACCENT, OTHER = OKABE_ITO[4], OKABE_ITO[3]


def _layer_axis(rows: Sequence[dict]) -> dict[int, float]:
    """x position of each layer; mid+last sits two steps right of the last layer."""
    layers = sorted({r["layer"] for r in rows if r["layer"] != MID_LAST})
    positions = {layer: float(layer) for layer in layers}
    if any(r["layer"] == MID_LAST for r in rows):
        positions[MID_LAST] = (layers[-1] if layers else 0) + 2.0
    return positions


def _mark_mid_last(ax, positions: dict[int, float]) -> None:
    if MID_LAST in positions:
        x = positions[MID_LAST]
        ax.axvline(x - 1, color="grey", lw=0.6, ls=":")
        ticks = [t for t in ax.get_xticks() if 0 <= t <= x - 1.5] + [x]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["mid+last"])
        ax.set_xlim(-0.7, x + 0.7)


def plot_layer_accuracy(
    accuracy_rows: Sequence[dict],
    zero_shot: dict,
    title: str,
    path: Path,
    chance: float | None = None,
    chosen: int | None = None,
    bands: str = "",
) -> Path:
    """Hard-test accuracy per layer for easy-, hard- and all-trained probes, with CI bands.

    Args:
        accuracy_rows: rows with layer, train_on, accuracy, accuracy_low, accuracy_high.
        zero_shot: a row with accuracy, accuracy_low, accuracy_high (the unsupervised floor).
        chance: uniform guessing's expected accuracy on the test items, drawn as a line: a
            probe near it has learned nothing, whatever its SGR says.
        chosen: the layer the report reads (chosen on validation items), marked.
        bands: what the bands are (`bands_note`), shown in the legend.
    """
    fig, ax = plt.subplots(figsize=(9.5, 4))
    x_of = _layer_axis(accuracy_rows)
    for train_on, color in COLORS.items():
        rows = sorted(
            (r for r in accuracy_rows if r["train_on"] == train_on), key=lambda r: x_of[r["layer"]]
        )
        line = [r for r in rows if r["layer"] != MID_LAST]
        if line:
            layers = [x_of[r["layer"]] for r in line]
            ax.plot(layers, [r["accuracy"] for r in line], "-o", ms=3, color=color)
            ax.fill_between(
                layers,
                [r["accuracy_low"] for r in line],
                [r["accuracy_high"] for r in line],
                color=color,
                alpha=0.15,
            )
        for r in rows:  # mid+last: a point with its interval, not joined to the layers
            if r["layer"] == MID_LAST:
                ax.errorbar(
                    [x_of[MID_LAST]],
                    [r["accuracy"]],
                    yerr=[
                        [r["accuracy"] - r["accuracy_low"]],
                        [r["accuracy_high"] - r["accuracy"]],
                    ],
                    fmt="o",
                    ms=4,
                    capsize=3,
                    color=color,
                )
        if rows:
            ax.plot([], [], "-o", ms=3, color=color, label=f"trained on {train_on}")
    ax.axhline(zero_shot["accuracy"], color="black", ls="--", lw=1, label="zero-shot")
    ax.axhspan(zero_shot["accuracy_low"], zero_shot["accuracy_high"], color="grey", alpha=0.15)
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, color="black", ls=":", lw=1, label=f"chance ({chance:.3f})")
    _mark_chosen(ax, x_of, chosen, bands)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("accuracy on the hard test set")
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path, mid_last=x_of)


def _legend_outside(ax) -> None:
    """The legend beside the axes, where it hides no line."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def bands_note(n_test: int, n_seeds: int, n_train: int | str) -> str:
    """What a figure's bands and bars are, for its legend."""
    return (
        f"bands: 95% CI, bootstrap over\n{n_test} test items and {n_seeds} seeds; n_train {n_train}"
    )


def _mark_chosen(ax, x_of: dict[int, float], chosen: int | None, bands: str) -> None:
    """A vertical line at the layer chosen on validation items, and the bands' meaning."""
    if chosen is not None and chosen in x_of:
        name = "mid+last" if chosen == MID_LAST else str(chosen)
        ax.axvline(x_of[chosen], color="grey", lw=6, alpha=0.25,
                   label=f"chosen on easy validation (layer {name})")  # fmt: skip
    if bands:
        ax.plot([], [], " ", label=bands)


def plot_layer_sgr(
    sgr_rows: Sequence[dict],
    title: str,
    path: Path,
    chosen: int | None = None,
    bands: str = "",
) -> Path:
    """SGR per layer with its bootstrap interval (1 = easy as good as hard supervision).

    Layers with no gap to recover (`no_gap`: the interval of hard - zero-shot includes 0) are
    hollow and greyed: their SGR is a ratio over noise.
    """
    x_of = _layer_axis(sgr_rows)
    rows = sorted(sgr_rows, key=lambda r: x_of[r["layer"]])
    fig, ax = plt.subplots(figsize=(9.5, 4))
    joined = [r for r in rows if r["layer"] != MID_LAST]
    if joined:
        ax.plot([x_of[r["layer"]] for r in joined], [r["sgr"] for r in joined], "-",
                color=ACCENT, lw=0.8, alpha=0.5)  # fmt: skip
    for no_gap in (False, True):
        group = [r for r in rows if bool(r.get("no_gap", False)) is no_gap]
        if not group:
            continue
        ax.errorbar(
            [x_of[r["layer"]] for r in group],
            [r["sgr"] for r in group],
            yerr=[
                [max(0.0, r["sgr"] - r["sgr_low"]) for r in group],
                [max(0.0, r["sgr_high"] - r["sgr"]) for r in group],
            ],
            fmt="o",
            ms=4,
            capsize=2,
            color="grey" if no_gap else ACCENT,
            mfc="white" if no_gap else ACCENT,
            label="no gap (hard - zero-shot CI includes 0)" if no_gap else "SGR with 95% CI",
        )
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.axhline(0.0, color="black", lw=0.8)
    _mark_chosen(ax, x_of, chosen, bands)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("SGR = (easy - zero-shot) / (hard - zero-shot)")
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path, mid_last=x_of)


def _save(
    fig, path: Path, integer_x: bool = True, mid_last: dict[int, float] | None = None
) -> Path:
    for ax in fig.axes:
        if integer_x:
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        if mid_last:
            _mark_mid_last(ax, mid_last)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def _wrapped(label: str, width: int = 24) -> str:
    """A label on lines of at most `width` characters (a file task is named by its path)."""
    import textwrap

    return "\n".join(textwrap.wrap(label, width)) or label


def plot_sgr_bars(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """SGR per method (bars) for each task (groups), with bootstrap intervals; a row with no
    gap to recover gets the words "no gap" instead of a bar."""
    import numpy as np

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(tasks)), 4))
    for m, method in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for t, task in enumerate(tasks):
            row = next((r for r in rows if r["task"] == task and r["method"] == method), None)
            if row is None:
                continue
            x = t + (m - (len(methods) - 1) / 2) * width
            if row.get("no_gap") or not np.isfinite(row["sgr"]):
                ax.text(x, 0.02, "no gap", rotation=90, ha="center", va="bottom", fontsize=7)
                continue
            xs.append(x)
            ys.append(row["sgr"])
            lo.append(max(0.0, row["sgr"] - row["sgr_low"]))
            hi.append(max(0.0, row["sgr_high"] - row["sgr"]))
        color = OKABE_ITO[m % len(OKABE_ITO)]
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=method, color=color)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlim(-0.5, len(tasks) - 0.5)  # also where every row is "no gap" (no bar to fit)
    ax.set_xticks(range(len(tasks)), [_wrapped(t) for t in tasks])  # a file task: its path
    ax.set_ylabel("SGR (1 = easy as good as hard)")
    ax.set_title(
        _wrapped(title or "Supervision Gap Recovered on the hard test set", 70), fontsize=10
    )
    ax.plot([], [], " ", label="bars: 95% CI over test items and seeds")
    ax.legend(fontsize=8)
    return _save(fig, path, integer_x=False)


def plot_families(
    rows: Sequence[dict], floors: dict[str, tuple[float, float]], path: Path, title: str
) -> Path:
    """Hard-test accuracy of each probe family trained on easy and on hard items (bars with
    95% intervals) at its chosen layer, one panel per task, with the task's zero-shot (dashed)
    and chance (dotted) lines: `random` among the families is the floor a direction must beat.
    `rows`: accuracy rows (task, method, train_on, accuracy, accuracy_low, accuracy_high)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(
        len(tasks), 1, figsize=(9, 2.6 * len(tasks)), squeeze=False, sharex=True
    )
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        here = [r for r in rows if r["task"] == task]
        families = list(dict.fromkeys(r["method"] for r in here))
        for k, on in enumerate(("easy", "hard")):
            points = [next((r for r in here if r["method"] == f and r["train_on"] == on), None)
                      for f in families]  # fmt: skip
            xs = [i + (k - 0.5) * 0.38 for i, r in enumerate(points) if r]
            got = [r for r in points if r]
            ax.bar(xs, [r["accuracy"] for r in got], 0.38, color=COLORS[on],
                   label=f"trained on {on}", yerr=[[r["accuracy"] - r["accuracy_low"] for r in got],
                         [r["accuracy_high"] - r["accuracy"] for r in got]], capsize=2)  # fmt: skip
        zero_shot, chance = floors[task]
        ax.axhline(zero_shot, color="black", ls="--", lw=1, label="zero-shot")
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        low = min([chance, zero_shot, *(r["accuracy_low"] for r in here)])
        ax.set_ylim(max(0.0, low - 0.05), None)
        ax.set_xticks(range(len(families)), families, fontsize=8)
        ax.set_ylabel("accuracy")
        ax.set_title(_wrapped(task, 60), fontsize=9)
    _legend_outside(axes[0][0])
    fig.suptitle(_wrapped(title, 90), fontsize=10)
    return _save(fig, path, integer_x=False)


def plot_reliability(rows: Sequence[dict], family: str, path: Path, title: str) -> Path:
    """Reliability diagrams on the hard test sets, one panel per task: per confidence bin,
    accuracy against mean confidence for the zero-shot floor and `family` trained on each
    pool (its chosen layer); marker area by the bin's share of predictions; points below
    the diagonal are over-confident."""
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["method"] == family))
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(max(6.0, 3.4 * len(tasks)), 3.8), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
        here = [r for r in rows if r["task"] == task and r["n"]]
        floor = [r for r in here if r["train_on"] == "none"]
        lines = [(f"{floor[0]['method']}" if floor else "", floor, "black")]
        lines += [(on, [r for r in here if r["method"] == family and r["train_on"] == on],
                   color) for on, color in COLORS.items()]  # fmt: skip
        for name, points, color in lines:
            if not points:
                continue
            total = sum(r["n"] for r in points)
            ax.plot([r["confidence"] for r in points], [r["accuracy"] for r in points],
                    color=color, lw=1, label=name)  # fmt: skip
            ax.scatter([r["confidence"] for r in points], [r["accuracy"] for r in points],
                       s=[4 + 200 * r["n"] / total for r in points], color=color)  # fmt: skip
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (probability of the prediction)")
        ax.set_title(_wrapped(task, 40), fontsize=9)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, title="trained on", title_fontsize=7)
    fig.suptitle(_wrapped(title, 90), fontsize=10)
    return _save(fig, path, integer_x=False)


def plot_directions(rows: Sequence[dict], family: str, path: Path) -> Path:
    """Per task: cosines of directions trained on different strata per layer, with the
    seed-to-seed cosine of each stratum as the reference (dashed); across tasks; and the
    hard-test accuracy of the easy direction as trained and with hard-item scaling."""
    tasks = sorted({r["task"] for r in rows if r["comparison"] in ("strata", "seeds")})
    crossed = sorted({r["task"] for r in rows if r["comparison"] == "tasks"})
    quantized = [r for r in rows if r["comparison"].startswith("quantization")]
    columns = max(1, len(tasks) + (1 if crossed else 0) + (1 if quantized else 0))
    fig, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 6.5), squeeze=False)
    blue, red, green = COLORS["easy"], COLORS["hard"], COLORS["all"]
    styles = {
        "easy~hard": (red, "-"), "easy~all": (blue, "-"), "hard~all": (green, "-"),
        "easy~easy": (blue, "--"), "hard~hard": (red, "--"), "all~all": (green, "--"),
        "easy~easy disjoint": ("black", ":"),
        "easy": (blue, "-"), "hard": (red, "-"), "all": (green, "-"),
        "easy_rescaled_on_hard": (ACCENT, "-"),
    }  # fmt: skip

    def style_of(pair: str) -> tuple[str, str]:
        if pair in styles:
            return styles[pair]
        if ": " in pair:  # `easy: bfloat16~8bit`: the stratum's colour
            return styles.get(pair.split(": ")[0], ("black", "-"))
        probe, _, states = pair.partition(" on ")  # `8bit on bfloat16`: own solid, other dashed
        first = quantized[0]["pair"].split(": ")[-1].split("~")[0] if quantized else probe
        return (blue if probe == first else OTHER, "-" if probe == states else "--")

    def draw(ax, selected: list[dict], label_of=lambda p: p) -> None:
        x_of = _layer_axis(selected) if selected else {}
        for pair in dict.fromkeys(r["pair"] for r in selected):
            line = sorted(
                (r for r in selected if r["pair"] == pair), key=lambda r: x_of[r["layer"]]
            )
            color, ls = style_of(pair)
            joined = [r for r in line if r["layer"] != MID_LAST]
            ax.plot([x_of[r["layer"]] for r in joined], [r["value"] for r in joined], ls,
                    marker="o", ms=2.5, color=color, label=label_of(pair))  # fmt: skip
            apart = [r for r in line if r["layer"] == MID_LAST]  # mid+last: not joined
            if apart:
                ax.plot([x_of[MID_LAST]] * len(apart), [r["value"] for r in apart], "o", ms=4,
                        color=color)  # fmt: skip
        if x_of:
            _mark_mid_last(ax, x_of)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    for i, task in enumerate(tasks):
        cos = [r for r in rows if r["task"] == task and r["comparison"] in ("strata", "seeds")]
        draw(
            axes[0, i],
            cos,
            lambda p: p + (" (seed to seed)" if p.split("~")[0] == p.split("~")[-1] else ""),
        )
        axes[0, i].set_title(f"{task}: cosine of directions", fontsize=9)
        axes[0, i].axhline(0, color="black", lw=0.6)
        acc = [r for r in rows if r["task"] == task and r["comparison"] == "rescaled"]
        draw(
            axes[1, i],
            acc,
            lambda p: {"easy_rescaled_on_hard": "easy, hard scaling"}.get(p, f"trained on {p}"),
        )
        axes[1, i].set_title(f"{task}: hard-test accuracy", fontsize=9)
        axes[1, i].set_xlabel("layer")
    if crossed:
        ax = axes[0, len(tasks)]
        draw(ax, [r for r in rows if r["comparison"] == "tasks"], lambda p: f"trained on {p}")
        ax.set_title(" vs ".join(crossed[0].split("~")) + ": cosine", fontsize=9)
        ax.axhline(0, color="black", lw=0.6)
        axes[1, len(tasks)].axis("off")
    if quantized:
        top, bottom = axes[0, columns - 1], axes[1, columns - 1]
        names = ", ".join(sorted({r["task"] for r in quantized}))
        draw(top, [r for r in quantized if r["comparison"] == "quantization"],
             lambda p: f"trained on {p.replace(': ', ', ')}")  # fmt: skip
        top.set_title(f"{names}: cosine across quantizations", fontsize=9)
        draw(bottom, [r for r in quantized if r["comparison"] == "quantization_accuracy"],
             lambda p: f"easy probe of {p.replace(' on ', ' on states of ')}")  # fmt: skip
        bottom.set_title(f"{names}: hard-test accuracy", fontsize=9)
        bottom.set_xlabel("layer")
    fig.suptitle(f"{family} probe directions (w / sigma)", fontsize=10)
    return _save(fig, path, integer_x=False)


def _heatmap(ax, values, text, rows: Sequence[str], columns: Sequence[str], title: str, **kw):
    import numpy as np

    values = np.asarray(values, float)
    image = ax.imshow(values, aspect="auto", **kw)
    for i in range(len(rows)):
        for j in range(len(columns)):
            dark = np.isfinite(values[i, j]) and image.norm(values[i, j]) < 0.4
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title, fontsize=9)
    return image


def training_label(row: dict) -> str:
    """How a transfer row names what it trained on: its task, or `all but B` for a pooled
    leave-one-dataset-out training set (rows written before pooling have no `held_out`)."""
    held = row.get("held_out")
    return f"all but {held}" if isinstance(held, str) and held else row["train_task"]


def plot_transfer_matrix(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Three heatmaps, trained-on (task, stratum) x tested-on task: hard-test accuracy (with
    chance on the test items), SGR against the target's zero-shot with its own hard-trained
    probe as ceiling ("no gap" where the ceiling's gap includes 0), and recovered accuracy, at
    each training task's chosen layer. Rows at other layers (`--every-layer`) add a figure
    `<name>-layers.png`: accuracy of easy-trained probes on every task, per layer."""
    import numpy as np

    if any(not r["chosen"] for r in rows):
        _plot_transfer_layers(rows, path.with_name(path.stem + "-layers.png"), model)
    rows = [r for r in rows if r["chosen"]]
    train = list(dict.fromkeys((training_label(r), r["train_on"]) for r in rows))
    test = list(dict.fromkeys(r["test_task"] for r in rows))
    cell = {(training_label(r), r["train_on"], r["test_task"]): r for r in rows}
    grid = [[cell[(*t, b)] for b in test] for t in train]
    names = [f"{t} {s}" for t, s in train]
    columns = [f"{b}\n(chance {cell[(*train[0], b)]['chance']:.2f})" for b in test]
    fig, axes = plt.subplots(1, 3, figsize=(5 + 3.2 * len(test), 1.2 + 0.42 * len(train)))
    above = [[c["accuracy"] - c["chance"] for c in line] for line in grid]
    image = _heatmap(axes[0], above,
                     [[f"{c['accuracy']:.3f}\n[{c['accuracy_low']:.2f}, {c['accuracy_high']:.2f}]"
                       for c in line] for line in grid],
                     names, columns, "hard-test accuracy [95% CI]\n(colour: above chance)",
                     cmap="cividis")  # fmt: skip
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    sgr = [[np.nan if c["no_gap"] else c["sgr"] for c in line] for line in grid]
    image = _heatmap(axes[1], np.clip(np.asarray(sgr, float), -1, 2),
                     [["no gap" if c["no_gap"] else f"{c['sgr']:.2f}" for c in line]
                      for line in grid],
                     [""] * len(train), columns,
                     "SGR vs target zero-shot,\nceiling: target's own hard probe",
                     cmap="cividis", vmin=-1, vmax=2)  # fmt: skip
    fig.colorbar(image, ax=axes[1], shrink=0.8)
    image = _heatmap(axes[2], [[c["recovered"] for c in line] for line in grid],
                     [[f"{c['recovered']:.2f}" for c in line] for line in grid],
                     [""] * len(train), columns,
                     "recovered accuracy\n(A on B) / (B's hard probe on B)",
                     cmap="cividis")  # fmt: skip
    fig.colorbar(image, ax=axes[2], shrink=0.8)
    for i, line in enumerate(grid):  # leave-one-dataset-out: the dataset the probe never saw
        for j, c in enumerate(line):
            if c.get("held_out") == c["test_task"]:
                for ax in axes:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                                               edgecolor=ACCENT))  # fmt: skip
    first = rows[0]
    fig.suptitle(
        f"Transfer across datasets ({model}): validated mc_linear, n_train {first['n_train']}, "
        f"{first['n_seeds']} seeds; CIs bootstrap over test items and seeds",
        fontsize=10,
    )
    return _save(fig, path, integer_x=False)


def plot_hardness_gap(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Per task (columns): hard-test accuracy of every (train level i, test level j) cell
    against the gap j - i, coloured by test level; SGR against the gap (hollow: no gap to
    recover); and the moving window (train on levels <= k, test on the top level)."""
    import numpy as np

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(3, len(tasks), figsize=(3.3 * len(tasks), 8.5), squeeze=False)
    for c, task in enumerate(tasks):
        pairs = [r for r in rows if r["task"] == task and r["kind"] == "pair"]
        tested = sorted({r["test_level"] for r in pairs})
        for k, level in enumerate(tested):
            mine = [r for r in pairs if r["test_level"] == level]
            color = OKABE_ITO[k % len(OKABE_ITO)]
            x = np.array([r["gap"] for r in mine]) + (k - (len(tested) - 1) / 2) * 0.08
            for ax, key in ((axes[0, c], "accuracy"), (axes[1, c], "sgr")):
                y = np.array([r[key] for r in mine])
                low = np.array([r[f"{key}_low"] for r in mine])
                high = np.array([r[f"{key}_high"] for r in mine])
                hollow = np.array([key == "sgr" and r["no_gap"] for r in mine])
                for h in (False, True):
                    sel = hollow == h
                    if not sel.any():
                        continue
                    errors = [np.maximum(0, y[sel] - low[sel]), np.maximum(0, high[sel] - y[sel])]
                    label = f"tested on {level:g}" if key == "accuracy" and not h else None
                    face = "white" if h else color
                    ax.errorbar(x[sel], y[sel], yerr=errors, fmt="o", ms=3.5, capsize=1.5,
                                lw=0.8, color=color, mfc=face, label=label)  # fmt: skip
        axes[0, c].axhline(np.mean([r["chance"] for r in pairs]), color="black", ls=":", lw=1,
                           label="chance")  # fmt: skip
        axes[0, c].set_title(f"{task} (layer {pairs[0]['layer']})", fontsize=9)
        axes[0, c].legend(fontsize=6)
        axes[1, c].axhline(1, color="grey", ls=":", lw=1)
        axes[1, c].axhline(0, color="black", lw=0.6)
        axes[1, c].set_ylim(-3, 4)
        window = [r for r in rows if r["task"] == task and r["kind"] == "window"]
        ax = axes[2, c]
        ks = [r["train_level"] for r in window]
        ax.plot(ks, [r["accuracy"] for r in window], "-o", ms=3, color=COLORS["easy"],
                label="trained on levels <= k")  # fmt: skip
        low, high = [r["accuracy_low"] for r in window], [r["accuracy_high"] for r in window]
        ax.fill_between(ks, low, high, color=COLORS["easy"], alpha=0.15)
        ax.axhline(window[0]["zero_shot"], color="black", ls="--", lw=1, label="zero-shot")
        ax.axhline(window[0]["chance"], color="black", ls=":", lw=1, label="chance")
        ax.axhline(window[0]["own"], color=COLORS["hard"], lw=1,
                   label=f"trained on {window[0]['test_level']:g} only")  # fmt: skip
        ax.set_xlabel(f"k (tested on {window[0]['test_level']:g})")
        ax.legend(fontsize=6)
        axes[0, c].set_xlabel("gap j - i")
        axes[1, c].set_xlabel("gap j - i")
        for ax in axes[:, c]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy on level j's test set")
    axes[1, 0].set_ylabel("SGR (hollow: no gap)")
    axes[2, 0].set_ylabel("accuracy on the top level")
    first = rows[0]
    fig.suptitle(
        f"Hardness gaps ({model}): validated mc_linear trained on level i, tested on level j\n"
        f"n_train {first['n_train']}, {first['n_seeds']} seeds; bars and bands: 95% CI over "
        "test items and seeds",
        fontsize=9,
    )
    return _save(fig, path)


def plot_ladder(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Hard-test accuracy of probes trained on each pool (easiest first), with intervals,
    zero-shot and chance lines, and each pool's SGR written beside its bar."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ys = list(range(len(rows)))[::-1]
    for y, r, color in zip(ys, rows, OKABE_ITO, strict=False):
        error = [[r["accuracy"] - r["accuracy_low"]], [r["accuracy_high"] - r["accuracy"]]]
        ax.barh(y, r["accuracy"], xerr=error, color=color, capsize=3, height=0.6)
        text = r["sgr_label"] if "sgr_label" in r else f"SGR {r['sgr_text']}"
        ax.text(r["accuracy_high"] + 0.005, y, text, va="center", fontsize=7)
    first = rows[0]
    ax.axvline(first["zero_shot"], color="black", ls="--", lw=1, label="zero-shot")
    ax.axvline(first["chance"], color="black", ls=":", lw=1, label="chance")
    ax.set_yticks(ys, [f"{r['train_pool']} ({r['pool_size']})" for r in rows], fontsize=8)
    ax.set_xlabel(f"accuracy on {first['test_task']} hard test ({first['n_test']} items)")
    ax.set_xlim(0, max(r["accuracy_high"] for r in rows) + 0.25)
    ax.set_title(
        f"Third grade to college ({model}), layer {first['layer']}\nn_train "
        f"{first['n_train']}, {first['n_seeds']} seeds; 95% CI over test items and seeds",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, integer_x=False)


def plot_learning_curves(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Per task (columns): hard-test accuracy against n_train (top, log scale) and against
    labelling cost (bottom), for easy / hard / all training, with 95% bands, zero-shot and
    chance."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 6.5), squeeze=False)
    for c, task in enumerate(tasks):
        mine = [r for r in rows if r["task"] == task]
        for ax, x_key in ((axes[0, c], "n_train"), (axes[1, c], "cost")):
            for train_on, color in COLORS.items():
                line = sorted((r for r in mine if r["train_on"] == train_on),
                              key=lambda r: r[x_key])  # fmt: skip
                if not line:
                    continue
                xs = [r[x_key] for r in line]
                ax.plot(xs, [r["accuracy"] for r in line], "-o", ms=3, color=color,
                        label=f"trained on {train_on}")  # fmt: skip
                low = [r["accuracy_low"] for r in line]
                high = [r["accuracy_high"] for r in line]
                ax.fill_between(xs, low, high, color=color, alpha=0.15)
            ax.axhline(mine[0]["zero_shot"], color="black", ls="--", lw=1, label="zero-shot")
            ax.axhline(mine[0]["chance"], color="black", ls=":", lw=1, label="chance")
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(plt.ScalarFormatter())
            ax.grid(alpha=0.3)
        axes[0, c].set_title(f"{task} (layer {mine[0]['layer']}, {mine[0]['n_test']} test items)",
                             fontsize=9)  # fmt: skip
        axes[0, c].set_xlabel("training items (nested draws)")
        axes[1, c].set_xlabel(f"labelling cost (hard item = {mine[0]['hard_cost']:g} easy)")
        axes[0, c].legend(fontsize=7)
    axes[0, 0].set_ylabel("accuracy on the hard test set")
    axes[1, 0].set_ylabel("accuracy on the hard test set")
    first = rows[0]
    fig.suptitle(
        f"Learning curves ({model}): validated mc_linear, {first['n_seeds']} seeds; bands: 95% "
        "CI over test items and seeds",
        fontsize=9,
    )
    return _save(fig, path, integer_x=False)


def plot_noisy_labels(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Per task: hard-test accuracy of hard-trained probes against the share of wrong hard
    labels, beside clean easy training (band), zero-shot and chance."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        easy = next(r for r in mine if r["train_on"] == "easy (clean)")
        noisy = sorted((r for r in mine if r["train_on"] == "hard (noisy)"), key=lambda r: r["p"])
        ps = [r["p"] for r in noisy]
        ax.plot(ps, [r["accuracy"] for r in noisy], "-o", ms=3, color=COLORS["hard"],
                label="trained on hard, noisy labels")  # fmt: skip
        low, high = [r["accuracy_low"] for r in noisy], [r["accuracy_high"] for r in noisy]
        ax.fill_between(ps, low, high, color=COLORS["hard"], alpha=0.15)
        ax.axhline(easy["accuracy"], color=COLORS["easy"], lw=1.2, label="trained on easy, clean")
        ax.axhspan(easy["accuracy_low"], easy["accuracy_high"], color=COLORS["easy"], alpha=0.12)
        ax.axhline(easy["zero_shot"], color="black", ls="--", lw=1, label="zero-shot")
        ax.axhline(easy["chance"], color="black", ls=":", lw=1, label="chance")
        ax.set_xlabel("share of hard training labels replaced by a wrong choice")
        ax.set_title(f"{task} (layer {easy['layer']}, {easy['n_test']} test items)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("accuracy on the hard test set")
    fig.suptitle(
        f"Noisy hard labels vs clean easy ones ({model}): n_train {rows[0]['n_train']}, "
        f"{rows[0]['n_seeds']} seeds; bands: 95% CI over test items and seeds",
        fontsize=9,
    )
    return _save(fig, path, integer_x=False)


def _plot_transfer_layers(rows: Sequence[dict], path: Path, model: str) -> Path:
    """Per training task: hard-test accuracy of its easy-trained probes on every task's test
    set at every layer, with 95% bands and each test set's chance (dotted)."""
    tasks = list(dict.fromkeys(r["train_task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for k, target in enumerate(tasks):
            wanted = (task, target, "easy")
            line = sorted(
                (r for r in rows if (r["train_task"], r["test_task"], r["train_on"]) == wanted),
                key=lambda r: r["layer"],
            )
            color = OKABE_ITO[k % len(OKABE_ITO)]
            xs = [r["layer"] for r in line]
            ax.plot(xs, [r["accuracy"] for r in line], "-o", ms=2.5, color=color,
                    label=f"tested on {target}")  # fmt: skip
            low, high = [r["accuracy_low"] for r in line], [r["accuracy_high"] for r in line]
            ax.fill_between(xs, low, high, color=color, alpha=0.12)
            ax.axhline(line[0]["chance"], color=color, ls=":", lw=1)
        chosen = next((r["layer"] for r in rows if r["train_task"] == task and r["chosen"]), None)
        if chosen is not None:
            ax.axvline(chosen, color="grey", lw=5, alpha=0.25, label=f"chosen layer {chosen}")
        ax.set_title(f"trained on {task} easy", fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("hard-test accuracy (dotted: chance)")
    fig.suptitle(f"Transfer per layer ({model}); bands: 95% CI over test items and seeds",
                 fontsize=9)  # fmt: skip
    return _save(fig, path)


def _size_positions(rows: Sequence[dict]) -> dict[str, float]:
    """x of each model: its parameters (log axis), models of one size side by side."""
    import numpy as np

    sizes: dict[str, float] = {}
    for r in rows:
        value = r["parameters"]
        sizes.setdefault(r["model"], float(value) if np.isfinite(value) else np.nan)
    known = [v for v in sizes.values() if np.isfinite(v)]
    fallback = (max(known) if known else 1.0) * 2
    positions, seen = {}, {}
    for model, size in sizes.items():
        size = size if np.isfinite(size) else fallback
        k = seen[size] = seen.get(size, -1) + 1
        positions[model] = size * 1.15**k
    return positions


def plot_model_size(rows: Sequence[dict], path: Path) -> Path:
    """Per task (columns): SGR with its interval (top) and zero-shot, easy- and hard-trained
    accuracy on the hard test set (bottom) against the model's parameters, one line per
    method; models of one size (one model under several quantizations) sit side by side."""
    import numpy as np

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    x_of = _size_positions(rows)
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.4), squeeze=False)
    for t, task in enumerate(tasks):
        top, bottom = axes[0][t], axes[1][t]
        for m, method in enumerate(methods):
            mine = [r for r in rows if r["task"] == task and r["method"] == method]
            mine.sort(key=lambda r: x_of[r["model"]])
            if not mine:
                continue
            color = OKABE_ITO[m % len(OKABE_ITO)]
            xs = [x_of[r["model"]] for r in mine]
            nudge = 1.04 ** (m - (len(methods) - 1) / 2)  # methods' intervals side by side
            gap = [r for r in mine if not r["no_gap"] and np.isfinite(r["sgr"])]
            top.errorbar(
                [x_of[r["model"]] * nudge for r in gap], [r["sgr"] for r in gap],
                yerr=[[max(0.0, r["sgr"] - r["sgr_low"]) for r in gap],
                      [max(0.0, r["sgr_high"] - r["sgr"]) for r in gap]],
                marker="o", capsize=3, color=color, label=method,
            )  # fmt: skip
            for r in mine:
                if r not in gap:
                    top.text(x_of[r["model"]] * nudge, 0.05, "no gap", rotation=90, fontsize=7,
                             ha="center", va="bottom", color=color)  # fmt: skip
            bottom.plot(xs, [r["easy"] for r in mine], "o--", color=color,
                        label=f"{method} easy-trained")  # fmt: skip
            bottom.plot(xs, [r["hard"] for r in mine], "s-", color=color,
                        label=f"{method} hard-trained")  # fmt: skip
        floor = {r["model"]: r["unsupervised"] for r in rows if r["task"] == task}
        ordered = sorted(floor, key=x_of.get)
        bottom.plot([x_of[k] for k in ordered], [floor[k] for k in ordered], "^:", color="grey",
                    label="zero-shot")  # fmt: skip
        top.axhline(1.0, color="grey", ls=":", lw=1)
        top.axhline(0.0, color="black", lw=0.8)
        top.set_ylim(min(-0.2, top.get_ylim()[0]), max(1.2, top.get_ylim()[1]))
        top.set_title(task, fontsize=10)
        top.set_ylabel("SGR (95% CI)")
        bottom.set_ylabel("accuracy, hard test set")
        low, high = min(x_of.values()), max(x_of.values())
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlim(low / 1.25, high * 1.25)
            ax.set_xticks([x_of[k] for k in x_of], [_short(k, rows) for k in x_of],
                          fontsize=7, rotation=30, ha="right")  # fmt: skip
            ax.minorticks_off()
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    fig.supxlabel("model (log parameters)", fontsize=9)
    return _save(fig, path, integer_x=False)


def _short(model: str, rows: Sequence[dict]) -> str:
    """A tick label: the model's weights and its size in millions or billions."""
    size = next(r["parameters"] for r in rows if r["model"] == model)
    if not math.isfinite(size):
        return model
    scaled = f"{size / 1e9:.1f}B" if size >= 1e9 else f"{size / 1e6:.0f}M"
    return f"{model}\n{scaled}"


def plot_relative_depth(rows: Sequence[dict], path: Path) -> Path:
    """Per task: hard-test accuracy of easy- and hard-trained probes of the first probe method
    at each layer, on a relative depth axis (layer / layers) so models of different depths
    line up; one colour per model."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for t, task in enumerate(tasks):
        ax = axes[0][t]
        mine = [r for r in rows if r["task"] == task]
        method = mine[0]["method"] if mine else ""
        for m, model in enumerate(models):
            color = OKABE_ITO[m % len(OKABE_ITO)]
            for train_on, style in (("easy", "--"), ("hard", "-")):
                line = sorted(
                    (r for r in mine if (r["model"], r["method"], r["train_on"])
                     == (model, method, train_on)),
                    key=lambda r: r["relative_depth"],
                )  # fmt: skip
                ax.plot([r["relative_depth"] for r in line], [r["accuracy"] for r in line],
                        style, color=color, label=f"{model} {train_on}-trained")  # fmt: skip
        ax.set_title(f"{task}: {method}", fontsize=10)
        ax.set_xlabel("relative depth (layer / layers)")
        ax.set_ylabel("accuracy, hard test set")
        ax.set_xlim(0, 1)
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path, integer_x=False)
