"""Measuring models on data: the objective and validation metric, and what `graphprune eval` prints."""
