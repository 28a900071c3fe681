"""The shrink report: what was removed, what was kept and why, what it cost; the depth table."""
