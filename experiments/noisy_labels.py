"""RQ3: is clean easy data better than noisy hard data? A fraction p of the hard training
labels is replaced by a random wrong choice (p in 0, 0.1, 0.2, 0.3, 0.5 by default) and the
hard-trained probes are compared with clean easy ones on the hard test set. Same as
`truthprobe noisy-labels` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["noisy-labels", *sys.argv[1:]]))
