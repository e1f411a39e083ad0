"""Experiments as data: sweep specs, their expansion into runs, running them, their tables, and tuning."""
