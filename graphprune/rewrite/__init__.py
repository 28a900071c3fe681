"""Rewrite: a plan in, a new dense trainable model out; then what data can restore (BatchNorm statistics, least-squares refit)."""
