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
    # `high`'s cloak for a quarter of the cost: the three 112 px sources (hse-mnv1 reads 224 px, the dearest) and 10
    # larger steps (as many dodged as with 15 steps of 18, `bench/results/independent-medium-10`), pruned like `high`
    # (paired with the unpruned one: the same dlib dodge on LFW, more on arcface and hse and on deepface,
    # `bench/results/independent-prune-*`); about 1.2 CPU s per LFW face, 2 on deepface's large photos.
    Level("medium", "cloak", 50.0, ("mbf-arc", "mbf-tf", "mobileface"),
          replace(SUBTLE, steps=10, step_size=24.0, keep=0.5),
          summary="the high cloak with 3 source models and 10 steps: a quarter of high's time"),
    # The subtle cloak starts on the top half of the face region and keeps the half of those pixels it moved most
    # (as many as before): the optimiser picks its support. Paired with the cloak on the top quarter on 200 LFW
    # probes it dodged more on every held-out verifier (dlib 195 vs 189, arcface 185 vs 164) at the same look
    # (`bench/results/independent-prune-lfw`).
    Level("high", "cloak", 50.0, CLOAK_SOURCES, replace(SUBTLE, keep=0.5),
          summary="subtle cloak (changes within 16 levels) on the quarter of the face the optimiser picks from the "
                  "top 50 % pixels, every source model every step (default)"),
    # For faces `high` leaves matched (`--escalate` ends here): the cloak starts on the top quarter of the face region
    # and keeps the quarter of those pixels it moved most (about 5 % of the face box), each change unbounded. On 200
    # LFW probes it dodged held-out dlib 98.5 % with a quarter of `high`'s pixels; the price is saturated dots on eye
    # corners, nostrils and lips (`bench/results/independent-prune-lfw`).
    Level("max", "cloak", 25.0, CLOAK_SOURCES, replace(SUBTLE, epsilon=None, keep=0.25),
          summary="the strongest: about 5 % of the face changed, without a bound on each change (visible dots)"),
):
    LEVELS.register(_level.name, _level)

# The default is `high`: at whole-photo SSIM >= 0.99 it dodged the most photos on held-out dlib through its own
# pipeline; `max` dodges more at a visibly larger change (see the README's protection section for n and intervals).
DEFAULT_LEVEL = "high"
ORDER = ("low", "medium", "high", "max")  # escalation order
