"""Errors a user can act on. The CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class FacecloakError(Exception):
    """Base class of every error facecloak raises on purpose."""


class ConfigError(FacecloakError):
    """A recipe, option or argument is invalid."""


class ModelNotPulledError(FacecloakError):
    """A model's converted weights are not in the cache yet."""


class ChecksumError(FacecloakError):
    """A downloaded or cached file does not match its recorded sha256."""


class PullError(FacecloakError):
    """Fetching a model's source package failed (missing tool, registry unreachable, ...)."""


class ImageError(FacecloakError):
    """A photo cannot be read or written (corrupt, unsupported, too large, ...)."""


class NoFaceError(FacecloakError):
    """No face was found where one was required."""


class DataError(FacecloakError):
    """A labelled data set (manifest, folder) is malformed."""
