"""Losses of module ghm (being written)."""
