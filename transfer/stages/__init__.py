"""Stages: each composes the pieces for one step of the pipeline."""
