"""The ``driftlab`` command and what it stands on: the entry point (``main``), the run context, the experiment
registry, results folders and their locks, seed sweeps, thread settings, shared file I/O."""
