"""facecloak: protect people in photos from face recognition by changing only the pixels models rely on most.

    import facecloak
    result = facecloak.protect(rgb, budget=1.0, fill="cloak")      # arrays in, arrays out
    for r in facecloak.protect_batch(photos, fill="black"): ...
    verdicts = facecloak.verify(rgb, decoded_output, boxes=[f.face.box for f in result.faces])

The library raises `facecloak.errors.FacecloakError` subclasses with messages a user can act on. The public
functions load lazily, so `import facecloak.errors` or `facecloak.files` does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Person", "ProtectResult", "__version__", "build_person", "protect", "protect_batch", "verify"]
_LAZY = {"Person", "ProtectResult", "build_person", "protect", "protect_batch"}


def __getattr__(name: str) -> Any:
    if name == "verify":
        from facecloak.verification import panel as verification

        return verification.verify
    if name in _LAZY:
        from facecloak.protection import protect as protection

        return getattr(protection, name)
    raise AttributeError(f"module 'facecloak' has no attribute {name!r}")
