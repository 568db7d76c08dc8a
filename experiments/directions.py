"""Is what a probe learns from easy items the same direction as what it learns from hard ones?

Runs (or resumes: stored parts are reused) the layer sweep, then compares the saved probe
directions (w / sigma) per layer: easy vs hard vs all, each against itself across seeds (the
reference: two easy draws disagree too), and task against task (ARC vs MMLU by default); and the
hard-test accuracy of the easy direction with its scaling refitted on hard items. Writes
`directions.csv` (tidy) in the run directory and `directions.png` in plots/. Same flags as
`truthprobe sweep` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["directions", *sys.argv[1:]]))
