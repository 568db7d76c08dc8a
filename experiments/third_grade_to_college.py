"""Hase et al.'s Figure 1: probes trained on ARC grade 3, ARC grade 8, MMLU high school and
MMLU college items, all tested on MMLU's college-level test set. Same as
`truthprobe third-grade-to-college` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["third-grade-to-college", *sys.argv[1:]]))
