"""Capture: a model and example inputs in, an ATen fx graph with shapes out; then the dependency graph over it."""
