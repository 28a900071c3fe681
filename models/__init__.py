"""Bundled example models for graphprune."""
