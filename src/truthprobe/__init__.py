"""truthprobe: does what a model learns from easy labelled examples transfer to hard ones?

Cache per-layer hidden states once, train probes on easy items, test on hard ones, and report
Supervision Gap Recovered (SGR) with confidence intervals. See README.md for the quickstart.

The entry points are importable from here (each loads its module on first use, so
`import truthprobe` stays light):

    from truthprobe import SweepConfig, layer_sweep, load_run
    summary = layer_sweep(SweepConfig(tasks=("arc:grade",)))
    run = load_run(summary.run_dir)        # run.items, run.summary: pandas DataFrames
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from truthprobe.memory import bound_kernel_cache

bound_kernel_cache()

try:
    __version__ = version("truthprobe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

#: Public name -> module that defines it.
_EXPORTS = {
    # data and hardness
    "Question": "truthprobe.data",
    "Dataset": "truthprobe.data",
    "load_dataset": "truthprobe.data",
    "stratify": "truthprobe.hardness",
    "MEASURES": "truthprobe.hardness",
    # models, prompts, the cache
    "load_model": "truthprobe.models",
    "PromptTemplate": "truthprobe.prompts",
    "ExtractConfig": "truthprobe.activations",
    "extract": "truthprobe.activations",
    "ActivationCache": "truthprobe.activations",
    # probes and metrics
    "ChoiceProbs": "truthprobe.choice_probs",
    "ProbeData": "truthprobe.probes",
    "make_probe": "truthprobe.probes",
    "MultipleChoiceLinearProbe": "truthprobe.probes",
    "LogisticProbe": "truthprobe.probes",
    "MassMeanProbe": "truthprobe.probes",
    "CCSProbe": "truthprobe.probes",
    "SplitConfig": "truthprobe.evaluate",
    "bootstrap_sgr": "truthprobe.evaluate",
    "supervision_gap_recovered": "truthprobe.evaluate",
    # the harness, its two configurations, results
    "HarnessConfig": "truthprobe.harness",
    "run": "truthprobe.harness",
    "register_method": "truthprobe.methods",
    "SweepConfig": "truthprobe.sweep",
    "layer_sweep": "truthprobe.sweep",
    "BaselinesConfig": "truthprobe.comparison",
    "run_baselines": "truthprobe.comparison",
    "load_run": "truthprobe.runstore",
    "write_report": "truthprobe.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'truthprobe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
