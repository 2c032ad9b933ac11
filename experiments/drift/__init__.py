"""Drift figures: GD against its flows on digits, backward-error orders, SGD's modified flow, IGR, landscapes."""
