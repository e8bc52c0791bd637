"""Synthetic studies with exact ground truth, for tests, the demo and training."""
