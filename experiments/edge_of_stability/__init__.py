"""Edge-of-stability figures: GD, Adam, SGD and momentum at the edge; the central flow and the flow arena."""
