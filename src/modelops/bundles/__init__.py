"""Bundles: the model code a task runs, found by name and identified by content digest."""

from modelops.bundles.bundle import Bundle, BundleError
from modelops.bundles.resolver import BundleResolver

__all__ = ["Bundle", "BundleError", "BundleResolver"]
