"""Does a probe trained on easy items find the answer on hard ones, and at which layer?

The main job. Defaults run offline on a fresh machine: the embedded Gemma 3 270M, ARC split by
school grade and MMLU-STEM-5 by level, the paper's multiple-choice linear probe at every layer,
trained on 160 easy / hard / all items with 5 seeds and tested on held-out hard items; SGR with
bootstrap intervals, figures in plots/. Same flags as `truthprobe sweep` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
