"""Executors: how a task is isolated. Kept import-light: child processes import from here."""
