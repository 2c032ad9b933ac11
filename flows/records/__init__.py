"""What a run leaves behind: the ``Trajectory`` (and its ``Recorder``), typed events, time smoothing."""
