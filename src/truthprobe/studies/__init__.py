"""Transfer studies: across datasets, hardness gaps, training-set sizes and label noise. Each is
a config dataclass and a `PlannedStudy` (`truthprobe.studies.planned`): a plan of parts over the
sweep's run and a view over its store; the command line (`truthprobe transfer-matrix`, ...) and
`experiments/*.py` are generated from the configs."""
