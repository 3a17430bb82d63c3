"""Suites: lmms-eval task lists and the built-in offline tasks."""
