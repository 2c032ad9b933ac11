"""Step-size figures: the controllers on digits, corridors, the Polyak family, the DAL trade-off."""
