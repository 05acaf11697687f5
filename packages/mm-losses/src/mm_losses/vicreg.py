"""Losses of module vicreg (being written)."""
