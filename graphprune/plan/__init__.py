"""Plan: which channels go, from scores, cut rules and budgets; decisions carry their reasons."""
