"""Does easy-to-hard transfer fade as the gap between training and test levels widens?

For each ordinal hardness measure (ARC grade, Bloom, difficulty, depth of knowledge; MMLU
level; StrategyQA steps) trains the validated probe on one level and tests it on every level,
and the moving window: levels <= k for each k, tested on the top level. Same as
`truthprobe hardness-gap` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["hardness-gap", *sys.argv[1:]]))
