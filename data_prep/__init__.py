"""Converters from official dataset archives to the on-disk format (transfer/data/ondisk.py)."""
