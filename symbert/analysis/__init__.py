"""Passes over a traced graph; each returns a :class:`~symbert.analysis.breakdown.Breakdown`."""
