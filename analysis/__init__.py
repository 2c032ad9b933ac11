"""driftlab.analysis — what we read off trajectories: detectors, learning-rate controllers, plots."""
