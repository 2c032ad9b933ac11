"""experiments — driftlab's reproduced figures, benchmarks, data sets, the registry and the `driftlab` CLI."""
