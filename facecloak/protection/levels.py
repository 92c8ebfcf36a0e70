"""Protection levels: the few named trade-offs a user picks from (`--level`), each a fill, a budget and the
cloak's settings. Chosen by measurement on independent recognisers (see the README's protection section and
`bench/results/independent-*`); the figures there say what each level buys and costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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


# The subtle transfer cloak: a quarter of the face region, each change within +-16 levels, and the look in the loss
# (1 - SSIM weighed 16 against the cosines), so the change goes where it costs the least structure. On held-out
# dlib it dodged more than the earlier sparse cloak on 5 % (LFW, n = 200: 94.0 % vs 89.0 %) at whole-photo SSIM
# 0.992 instead of 0.978 (`bench/results/independent-lfw-subtle`).
SUBTLE = CloakSettings(steps=30, step_size=12.0, epsilon=16.0, look=16.0, early_stop=False, eot=TRANSFER_EOT)

LEVELS: Registry[Level] = Registry("protection level")
for _level in (
    Level("low", "black", 1.0, summary="black dots on the top 1 % LEAM pixels; fast, weak against other recognisers"),
    # The same cloak for a quarter of the cost: the three 112 px sources (hse-mnv1 reads 224 px, the dearest) and 10
    # larger steps (as many dodged as with 15 steps of 18, `bench/results/independent-medium-10`); under 2 CPU s per
    # face.
    Level("medium", "cloak", 25.0, ("mbf-arc", "mbf-tf", "mobileface"), replace(SUBTLE, steps=10, step_size=24.0),
          summary="subtle cloak on the top 25 % pixels (changes within 16 levels), 3 source models, 10 steps; "
                  "a quarter of high's time"),
    Level("high", "cloak", 25.0, CLOAK_SOURCES, SUBTLE,
          summary="subtle cloak on the top 25 % pixels (changes within 16 levels), every source model every step "
                  "(default)"),
    # For faces `high` leaves matched (`--escalate` ends here): the same pixels and cost, each change within +-24
    # levels. Stronger on every held-out verifier, slightly more visible (`bench/results/independent-max`).
    Level("max", "cloak", 25.0, CLOAK_SOURCES, replace(SUBTLE, epsilon=24.0),
          summary="the same cloak with changes within 24 levels: stronger, a little more visible"),
):
    LEVELS.register(_level.name, _level)

# The default is `high`: at whole-photo SSIM >= 0.99 it dodged the most photos on held-out dlib through its own
# pipeline; `max` dodges more at a visibly larger change (see the README's protection section for n and intervals).
DEFAULT_LEVEL = "high"
ORDER = ("low", "medium", "high", "max")  # escalation order
