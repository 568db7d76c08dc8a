"""The mechanics of the methods that answer without probes: k-shot prompts (`icl`),
chain-of-thought generation and answer matching (`cot`), and LoRA training (`qlora`).
The harness runs them through `truthprobe.methods`; `truthprobe.comparison` configures the
comparison."""
