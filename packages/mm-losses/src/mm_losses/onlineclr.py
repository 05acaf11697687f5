"""Losses of module onlineclr (being written)."""
