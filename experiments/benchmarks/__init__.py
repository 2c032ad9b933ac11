"""Speed benchmarks, each a registered experiment (``driftlab run bench-NAME``)."""
