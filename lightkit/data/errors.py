"""Errors raised by lightkit data modules."""

from __future__ import annotations

__all__ = ["BadImageError", "DataError"]


class DataError(ValueError):
    """A data module's configuration or data cannot work; the message names the value and the fix."""


class BadImageError(DataError):
    """An image file cannot be decoded (missing, truncated or not an image)."""
