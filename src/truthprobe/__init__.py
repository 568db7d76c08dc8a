"""truthprobe: does what a model learns from easy labelled examples transfer to hard ones?

Cache per-layer hidden states once, train probes on easy items, test on hard ones, and report
Supervision Gap Recovered (SGR) with confidence intervals. See README.md for the quickstart.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("truthprobe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
