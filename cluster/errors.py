"""Errors of the coordination package."""

from __future__ import annotations


class ClusterError(Exception):
    """Base of every error this package raises."""


class DirectoryError(ClusterError):
    """The stream directory could not be read or written (its storage
    failed); never a peer's fault."""
