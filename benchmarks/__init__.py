"""Measured comparisons, run by ``latentwire bench NAME --json FILE``; each prints ratios
against a baseline run in the same process or run."""
