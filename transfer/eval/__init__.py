"""Evaluation: metrics and measurements that take a model or arrays and return numbers."""
