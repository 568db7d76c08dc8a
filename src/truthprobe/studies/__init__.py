"""Transfer studies on the one activation cache: across datasets, hardness gaps, training-set
sizes and label noise. Each is a config dataclass and a `run_study(config)`; the command line
(`truthprobe transfer-matrix`, ...) and `experiments/*.py` are generated from the configs."""
