"""Errors the LEAM engine raises on purpose, each with a message a user can act on.

`leam` never imports `facecloak`, so these do not derive from `facecloak.errors.FacecloakError`; the CLI
catches `LeamError` next to `FacecloakError`.
"""

from __future__ import annotations


class LeamError(Exception):
    """Base class of every error the LEAM engine raises on purpose."""


class UnknownLayerError(LeamError):
    """A layer name is not a dotted path of a module of the model (the message lists close names)."""


class LayerCaptureError(LeamError):
    """A named layer did not produce a usable activation (did not run, ran twice, not a (N, C, h, w) tensor)."""


class ZeroGradientTargetError(LeamError):
    """The target score has no gradient with respect to the embedding, so every relevance map would be empty."""


class ProfileError(LeamError):
    """A person profile is malformed, or a profile file cannot be read or is of an unknown version."""
