"""Zero-shot parity with lm-evaluation-harness: ARC and MMLU test items rendered, scored and
graded (`acc`, `acc_norm`) by lm-eval's own task files and model wrapper, and by truthprobe's
`lmeval` template and scoring engine, on the same model. Same as `truthprobe lmeval-parity`
(see --help); needs `pip install -e '.[lmeval]'`.
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["lmeval-parity", *sys.argv[1:]]))
