"""Losses of module clip (being written)."""
