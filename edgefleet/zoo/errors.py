"""Errors of the model zoo, so that callers can tell a missing model from a tampered one."""

from __future__ import annotations


class ZooError(Exception):
    """Base of every model zoo error."""


class ModelNotFound(ZooError, LookupError):
    """The model or variant is unknown, unavailable, or not fetched onto this machine."""


class ModelIntegrityError(ZooError):
    """A model file's sha256 differs from the one the catalog pins."""


class CatalogError(ZooError, ValueError):
    """A catalog file is missing, malformed or inconsistent."""


class FetchError(ZooError):
    """A source package could not be downloaded or did not contain the expected model."""
