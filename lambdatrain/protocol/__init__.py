"""Declarations every other layer shares: the run's settings, the events, the errors, Lambda's limits. Pure Python, no I/O."""
