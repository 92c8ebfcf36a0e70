"""Protection levels: the few named trade-offs a user picks from (`--level`), each a fill, a budget and the
cloak's settings. Chosen by measurement on independent recognisers (see the README's protection section and
`bench/results/independent-*`); the figures there say what each level buys and costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from facecloak.protection.cloak import CloakSettings
from leam.registry import Registry

# A cloak built to transfer: it keeps going past the source models' thresholds (stopping at the white-box
# boundary leaves transfer on the table) and optimises over what real pipelines do to a photo.
TRANSFER_EOT = ("jitter", "mirror", "resample", "jpeg", "blur", "resize")
CLOAK_SOURCES = ("mbf-arc", "mbf-tf", "mobileface", "hse-mnv1")


@dataclass(frozen=True)
class Level:
    name: str
    fill: str
    budget: float  # percent of the face region
    models: tuple[str, ...] = ("mbf-arc", "mbf-tf", "mobileface")
    cloak: CloakSettings = field(default_factory=CloakSettings)
    summary: str = ""

    def protect_options(self) -> dict:
        """Keyword arguments of `facecloak.protect` for this level: `protect(rgb, **level.protect_options())`."""
        return {"models": self.models, "budget": self.budget, "fill": self.fill, "cloak_settings": self.cloak}


LEVELS: Registry[Level] = Registry("protection level")
for _level in (
    Level("low", "black", 1.0, summary="black dots on the top 1 % LEAM pixels; fast, weak against other recognisers"),
    # Twice the pixels of `high` with each change bounded to +-24 levels: far less visible than `high`'s saturated
    # dots (PSNR 38.7 vs 29.7 dB, GMSD half) for a few points of dodge (LFW, n = 30 paired: 23 vs 25 dodged).
    Level("medium", "cloak", 10.0, CLOAK_SOURCES,
          CloakSettings(steps=30, step_size=12.0, epsilon=24.0, early_stop=False, eot=TRANSFER_EOT),
          summary="cloak on the top 10 % pixels, each change within 24 levels; subtler than high"),
    Level("high", "cloak", 5.0, CLOAK_SOURCES,
          CloakSettings(steps=30, step_size=12.0, early_stop=False, eot=TRANSFER_EOT),
          summary="sparse cloak on the top 5 % pixels, optimised to transfer (default); visible up close"),
):
    LEVELS.register(_level.name, _level)

# The default is the strongest level: on held-out dlib through its own pipeline it dodged the most photos
# (see the README's protection section for n and intervals).
DEFAULT_LEVEL = "high"
ORDER = ("low", "medium", "high")  # escalation order
