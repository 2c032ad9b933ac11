"""The dynamics.

The ``Flow`` records (vector fields), their options, ODE integration, the GD runner, the central flow and its SDCP.
"""
