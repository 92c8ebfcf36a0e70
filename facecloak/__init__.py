"""facecloak: protect people in photos from face recognition by changing only the pixels models rely on most.

    import facecloak
    result = facecloak.protect(rgb, budget=1.0, fill="cloak")      # arrays in, arrays out
    for r in facecloak.protect_batch(photos, fill="black"): ...

The library raises `facecloak.errors.FacecloakError` subclasses with messages a user can act on.
"""

from facecloak.protection import Person, ProtectResult, build_person, protect, protect_batch

__version__ = "0.1.0"
__all__ = ["Person", "ProtectResult", "__version__", "build_person", "protect", "protect_batch"]
