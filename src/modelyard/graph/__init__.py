"""Inference graphs at run time: the executor behind graph endpoints."""
