"""Principal-flow figures: the PF paper quadratic, toys, the branch of the log, loss spikes."""
