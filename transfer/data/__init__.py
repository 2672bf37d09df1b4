"""Datasets, transforms and mixing."""
