"""Losses of module sogclr (being written)."""
