"""Keras model definitions (no training loops here: see jobs/train_*.py)."""
