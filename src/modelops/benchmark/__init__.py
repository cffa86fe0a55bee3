"""`mops bench`: executors measured side by side (see runner.py)."""
