"""Does what a probe learns on one dataset transfer to another?

Trains the validated probe on each task's easy / hard / all items (ARC, MMLU-STEM-5 and
StrategyQA by default, the sweep's items and draws, 5 seeds) and tests it on every task's
hard test set: accuracy against chance, SGR against the target's zero-shot with its own
hard-trained probe as ceiling, and recovered accuracy. Same as `truthprobe transfer-matrix`
(see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["transfer-matrix", *sys.argv[1:]]))
