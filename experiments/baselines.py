"""How do ICL, linear probes and QLoRA compare at recovering the easy-to-hard gap?

Runs zero-shot prompting, k-shot ICL, the best-layer linear probe (layer chosen on easy
validation items) and QLoRA on the same hard test set, training pools and seeds, for ARC/grade,
MMLU/level, StrategyQA/steps and GSM8k/steps (ICL and QLoRA reason step by step on StrategyQA
and GSM8k, as in the paper), and prints one table of accuracy and SGR with bootstrap intervals;
a bar plot goes to plots/. Every finished part is stored, so an interrupted run resumes.
Defaults are sized for a 2-core CPU (60 hard test items, 1 seed, QLoRA on 32 items for 4
updates); on a GPU use
`--max-test 0 --seeds 5 --qlora-n-train 160 --qlora-max-updates 0 --qlora-quantization 4bit`.
Same flags as `truthprobe baselines` (see --help).
"""

import sys

from truthprobe.cli import main

if __name__ == "__main__":
    sys.exit(main(["baselines", *sys.argv[1:]]))
