"""Checks every pruned model passes before it is handed back: it runs, its structure, the dead-channel oracle."""
