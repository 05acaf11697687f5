"""Losses of module simclr (being written)."""
