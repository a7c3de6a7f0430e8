"""Renderers: they read graphs and breakdowns, and never re-derive a quantity."""
