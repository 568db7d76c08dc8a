"""RQ4: how does hard-test accuracy grow with the number of easy, hard or mixed training items,
and with their labelling cost (hard items costing --hard-cost easy ones)? Draws are nested
within each seed. Same as `truthprobe learning-curves` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["learning-curves", *sys.argv[1:]]))
