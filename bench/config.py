"""Benchmark recipes: TOML files validated into a frozen `Recipe`, loaded by name, overridable from the CLI.

Precedence (the one place it is written down): **CLI overrides > recipe file > defaults below**.

- Defaults are the field defaults of the dataclasses in this module (`DataConfig`, ...) and, for `[leam]`, of
  `facecloak.masking.leamface.LeamSettings` (the one LEAM settings type; a recipe's table is parsed straight into it).
  `data.seed` defaults to the recipe's top-level `seed`, so one `--seed` moves both the sampling and the controls
  unless the recipe pins `data.seed` itself.
- A recipe file sets any subset of the keys; a key this module does not know is refused (at any depth) with the
  close valid names, so a typo never silently falls back to a default.
- CLI overrides are dotted keys with TOML values (``data.identities=5``, ``budgets=[1, 2]``, ``leam.method=layercam``;
  a value that is not valid TOML is taken as a bare string). They are applied to the file's table *before*
  validation, so they pass exactly the same checks.

Recipe keys and units:

``name``, ``description``           strings (``name`` defaults to the file's stem)
``seed``                            int >= 0, seeds every random control and the bootstrap
``data``                            identities / per_identity: int >= 1, or "all" (default all); min_photos: int >= 2
                                    (genuine pairs need two photos); seed: int >= 0
``sources``                         model ids, ``ensemble:a+b+c`` (maps averaged in ``leam.common_template``), or
                                    ``all-but-T`` (per target T: every differentiable target except T's network)
``targets``                         model ids and black-box recognisers (``mbf-arc-onnx``, ``dlib-native``,
                                    ``onnx:/path/model.onnx``)
``budgets``                         percent of the crop's pixels, each in (0, 100]
``fills``                           fill names (``facecloak.protection.fills.FILLS``, ``cloak`` included)
``controls``                        ``random-scatter``, ``random-shape``, ``other-person``, ``lastlayer-gradcam``
``leam``                            method, layers ("default" or a list of dotted names / "default" / "last" /
                                    "input"), target, selection, grid (stratified; a cell count or [n, n]),
                                    gamma (sampled),
                                    restrict_to_face, common_template
``evaluation``                      format png|jpeg, jpeg_quality 1..100, redetect, far (false-accept rates)
``cloak``                           steps, step_size (0-255 pixel units per step), epsilon (L-inf bound in 0-255
                                    units, or "none"), diversity, early_stop, eot, decoy
                                    (``facecloak.protection.cloak.CloakSettings``; defaults ``RECIPE_CLOAK``)
``robustness``                      defences: ``jpeg<Q>``, ``resize<P>`` (percent, down and back up), ``blur<S>``
                                    (Gaussian sigma in pixels), ``inpaint-mask``
``max_pairs_per_identity``          int >= 1: genuine (probe, reference) pairs kept per person
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from facecloak.errors import ConfigError
from facecloak.masking.leamface import LeamSettings
from facecloak.protection.cloak import CloakSettings
from leam.registry import UnknownNameError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
"""Where recipes live in a source checkout (the top-level `recipes/` folder, data only)."""

CONTROLS = ("random-scatter", "random-shape", "other-person", "lastlayer-gradcam")
LEAM_KEYS = ("method", "layers", "target", "selection", "grid", "gamma", "restrict_to_face", "common_template")
"""The `[leam]` keys of a recipe: the fields of `facecloak.masking.leamface.LeamSettings` a recipe sets (the budget is a
matrix axis, `budgets`; batch size and extras are the engine's)."""
FORMATS = ("png", "jpeg")
LEAVE_ONE_OUT = "all-but-T"
ENSEMBLE_PREFIX = "ensemble:"
ONNX_PREFIX = "onnx:"
LAYER_TOKENS = ("default", "last", "input")

# Black-box recognisers that run the same network as a differentiable model: a mask made with that model is
# not a transfer to them, and a leave-one-out ensemble for them must leave that model out.
# Targets that read the decoded photo through their OWN detection, landmarks and alignment
# (facecloak.verification.independent) are named `own:<pipeline>`; the held-out evaluation every recipe reports.
OWN_PREFIX = "own:"
SAME_NETWORK = {"mbf-arc-onnx": "mbf-arc", "dlib-native": "dlib-r29",
                "own:dlib": "dlib-r29", "own:arcface": "mbf-arc", "own:hse": "hse-mnv1"}


# --------------------------------------------------------------------------------------------------------------
# Known names


@dataclass(frozen=True)
class KnownNames:
    """The model, recogniser, fill and FAR names a recipe may use; `None` in a field means "not checked" (tests of
    the runner on hand-made models). LEAM names (methods, selectors, templates) are checked by `LeamSettings`."""

    models: frozenset[str] | None  # differentiable: sources and targets
    blackbox: frozenset[str] | None  # black-box recognisers: targets only
    fills: frozenset[str]
    fars: frozenset[float] | None


def known_names() -> KnownNames:
    """Names from the live registries."""
    from facecloak.models import MODELS
    from facecloak.models.blackbox import RECOGNISERS
    from facecloak.protection.fills import FILLS
    from facecloak.verification.thresholds import FARS

    return KnownNames(
        models=frozenset(MODELS),
        blackbox=frozenset(RECOGNISERS),
        fills=frozenset(FILLS.names()),
        fars=frozenset(float(f) for f in FARS),
    )


# --------------------------------------------------------------------------------------------------------------
# The recipe


@dataclass(frozen=True)
class DataConfig:
    """Sampling of the labelled set. `None` counts mean "all"."""

    identities: int | None = None
    per_identity: int | None = None
    min_photos: int = 2
    seed: int = 0


@dataclass(frozen=True)
class EvaluationConfig:
    """How protected probes reach the target: encoded, decoded (and re-detected), then compared."""

    format: str = "png"
    jpeg_quality: int = 95
    redetect: bool = False
    far: tuple[float, ...] = (0.01, 0.001)


CLOAK_KEYS = ("steps", "step_size", "epsilon", "diversity", "early_stop", "eot", "decoy")
"""The `[cloak]` keys of a recipe: the fields of `facecloak.protection.cloak.CloakSettings` a recipe sets."""
RECIPE_CLOAK = CloakSettings(steps=50, step_size=2.0, diversity=False)
"""The transfer benchmark's cloak when a recipe leaves a key out: small steps on the exact alignment, stopping at
the sources' thresholds (the paper's setting; the product's levels are in `facecloak.protection.levels`)."""


@dataclass(frozen=True)
class Defence:
    """One transformation applied to a protected photo before recognition (`robustness` recipe)."""

    name: str  # as written in the recipe
    kind: str  # "jpeg" | "resize" | "blur" | "inpaint-mask"
    value: float | None  # JPEG quality, resize percent, or blur sigma in pixels


@dataclass(frozen=True)
class RobustnessConfig:
    defences: tuple[str, ...] = ()

    def parsed(self) -> tuple[Defence, ...]:
        return tuple(parse_defence(d) for d in self.defences)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed entry of `sources`: one model, a fixed ensemble, or the leave-one-out ensemble."""

    text: str
    kind: str  # "model" | "ensemble" | "leave-one-out"
    models: tuple[str, ...]  # empty for leave-one-out: its members depend on the target

    def members(self, target: str, pool: Sequence[str]) -> tuple[str, ...]:
        """Models that make the mask when evaluating on `target`; `pool` = the differentiable target networks."""
        if self.kind != "leave-one-out":
            return self.models
        left_out = underlying_model(target)
        members = tuple(m for m in pool if m != left_out)
        if not members:
            raise ConfigError(f"{LEAVE_ONE_OUT} for target {target!r} leaves no model (pool: {', '.join(pool)})")
        return members


@dataclass(frozen=True)
class Recipe:
    """A validated benchmark recipe. Build it with `load_recipe` or `recipe_from_dict`, never by hand."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    budgets: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    fills: tuple[str, ...] = ("black",)
    leam: LeamSettings = field(default_factory=LeamSettings)  # `budget` unused: the budgets axis sets it per unit
    controls: tuple[str, ...] = ("random-scatter", "random-shape")
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    cloak: CloakSettings = RECIPE_CLOAK
    robustness: RobustnessConfig | None = None
    max_pairs_per_identity: int = 10
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists) that `recipe_from_dict` turns back into an equal recipe.

        `leam` holds the recipe keys only (`LEAM_KEYS`, grid as [rows, cols]): the same dict, so the same
        fingerprints and shard keys, as when the recipe had its own LEAM settings type."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["leam"] = leam_to_dict(self.leam)
        d["cloak"] = {k: getattr(self.cloak, k) for k in CLOAK_KEYS}
        return _jsonable({k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in d.items()})

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`: equal recipes, equal fingerprints, across runs."""
        return _sha(self.to_dict())

    def cell_fingerprint(self) -> str:
        """Fingerprint of everything that changes one cell's numbers; excludes the matrix axes and the prose.

        Key a resumable cell by ``(cell_fingerprint, source, target, budget, fill)``: adding a budget or a target
        to a recipe keeps the finished cells, changing the seed, data or LEAM settings invalidates them.
        """
        d = self.to_dict()
        for axis in ("name", "description", "sources", "targets", "budgets", "fills"):
            d.pop(axis)
        return _sha(d)

    def source_specs(self) -> tuple[SourceSpec, ...]:
        return tuple(parse_source(s) for s in self.sources)

    def pool(self, blackbox: Iterable[str] | None = None) -> tuple[str, ...]:
        """Differentiable models among the targets, in recipe order: the members `all-but-T` chooses from.

        `blackbox`: names of black-box recognisers (default: the live registry, or `SAME_NETWORK` without it).
        """
        if blackbox is None:
            blackbox = known_names().blackbox or ()
        skip = set(blackbox) | set(SAME_NETWORK)
        return tuple(t for t in self.targets if t not in skip and not t.startswith(ONNX_PREFIX))

    def with_overrides(self, overrides: Mapping[str, Any], known: KnownNames | None = None) -> Recipe:
        """A new recipe with dotted-key overrides applied and everything validated again.

        Works on the resolved values, so `data.seed` no longer follows `seed` here; use `load_recipe` with the
        overrides to get the file's precedence.
        """
        raw = apply_overrides(self.to_dict(), overrides)
        return recipe_from_dict(raw, known=known)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _sha(d: Mapping[str, Any]) -> str:
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Name helpers the runner uses


def underlying_model(target: str) -> str:
    """The differentiable network a recogniser runs (`mbf-arc-onnx` -> `mbf-arc`); itself otherwise."""
    return SAME_NETWORK.get(target, target)


def is_transfer(source_members: Iterable[str], target: str) -> bool:
    """True when the target's network was not among the models that made the mask."""
    return underlying_model(target) not in set(source_members)


def parse_source(text: str) -> SourceSpec:
    """Parse one `sources` entry (syntax only; names are checked by `recipe_from_dict`)."""
    if text == LEAVE_ONE_OUT:
        return SourceSpec(text, "leave-one-out", ())
    if text.startswith(ENSEMBLE_PREFIX):
        members = tuple(m.strip() for m in text[len(ENSEMBLE_PREFIX):].split("+"))
        if len(members) < 2 or any(not m for m in members) or len(set(members)) != len(members):
            raise ConfigError(
                f"source {text!r}: an ensemble names two or more different models joined by '+', "
                "e.g. 'ensemble:mbf-arc+mobileface'"
            )
        return SourceSpec(text, "ensemble", members)
    if not text or "+" in text or ":" in text:
        raise ConfigError(f"source {text!r}: expected a model id, 'ensemble:a+b' or '{LEAVE_ONE_OUT}'")
    return SourceSpec(text, "model", (text,))


_DEFENCE = re.compile(r"^(jpeg|resize|blur)(\d+(?:\.\d+)?)$")


def parse_defence(name: str) -> Defence:
    """`jpeg75` -> Defence(kind="jpeg", value=75); `inpaint-mask` -> Defence(kind="inpaint-mask", value=None)."""
    if name == "inpaint-mask":
        return Defence(name, "inpaint-mask", None)
    m = _DEFENCE.match(name)
    if not m:
        raise ConfigError(
            f"defence {name!r}: expected jpeg<quality 1-100>, resize<percent 1-99>, blur<sigma> or inpaint-mask "
            "(e.g. jpeg75, resize50, blur1)"
        )
    kind, value = m.group(1), float(m.group(2))
    ok = {"jpeg": 1 <= value <= 100 and value.is_integer(), "resize": 0 < value < 100, "blur": 0 < value <= 20}
    if not ok[kind]:
        raise ConfigError(f"defence {name!r}: {kind} value {m.group(2)} is out of range")
    return Defence(name, kind, value)


def resolve_layers(layers: str | Sequence[str], default_layers: Sequence[str]) -> tuple[str, ...]:
    """Concrete layer names for one model: expands "default" (its spec's layers), "last" (the last of them).

    "input" (the gradient × input pseudo-layer) and dotted module paths pass through unchanged; duplicates are
    dropped keeping the first occurrence.
    """
    items = [layers] if isinstance(layers, str) else list(layers)
    out: list[str] = []
    for item in items:
        expanded = list(default_layers) if item == "default" else [default_layers[-1]] if item == "last" else [item]
        out.extend(x for x in expanded if x not in out)
    return tuple(out)


# --------------------------------------------------------------------------------------------------------------
# Validation


def _suggest(key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} (valid: {', '.join(valid)})"


def _check_keys(table: Mapping[str, Any], cls: type, where: str, extra: Sequence[str] = ()) -> None:
    _check_names(table, [f.name for f in fields(cls) if f.init] + list(extra), where)


def _check_names(table: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    """Refuse a key of `table` that is not in `valid`, suggesting the nearest."""
    for key in table:
        if key not in valid:
            raise ConfigError(f"unknown key {_dotted(where, key)!r}{_suggest(key, valid)}")


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _int(value: Any, key: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {_type_name(value)} {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{key} must be {rng}, got {value}")
    return value


def _count_or_all(value: Any, key: str) -> int | None:
    if value is None or value == "all":
        return None
    if isinstance(value, str):
        raise ConfigError(f"{key} must be an integer >= 1 or \"all\", got {value!r}")
    return _int(value, key, 1)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {_type_name(value)} {value!r}")
    return float(value)


def _positive(value: Any, key: str, hi: float | None = None) -> float:
    x = _number(value, key)
    if x <= 0 or (hi is not None and x > hi):
        raise ConfigError(f"{key} must be in (0, {hi:g}], got {x:g}" if hi is not None else f"{key} must be > 0")
    return x


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {_type_name(value)} {value!r}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {_type_name(value)} {value!r}")
    return value


def _choice(value: Any, key: str, valid: Iterable[str]) -> str:
    s = _str(value, key)
    if s not in set(valid):
        raise ConfigError(f"{key}: unknown value {s!r}{_suggest(s, valid)}")
    return s


def _list(value: Any, key: str, *, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key} must be a list such as [\"a\", \"b\"], got {_type_name(value)} {value!r}")
    if not value and not allow_empty:
        raise ConfigError(f"{key} must not be empty")
    items = list(value)
    dupes = sorted({repr(v) for v in items if items.count(v) > 1})
    if dupes:
        raise ConfigError(f"{key} lists {', '.join(dupes)} more than once")
    return items


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table ([{key}] in TOML), got {_type_name(value)} {value!r}")
    return value


def _model(name: str, key: str, known: KnownNames, *, blackbox_ok: bool) -> None:
    if blackbox_ok and name.startswith(ONNX_PREFIX):
        if len(name) == len(ONNX_PREFIX):
            raise ConfigError(f"{key}: 'onnx:' needs a path, e.g. 'onnx:/models/arcface.onnx'")
        return
    if known.models is None:  # registry unavailable: syntax only
        return
    valid = set(known.models) | (set(known.blackbox or ()) | set(SAME_NETWORK) if blackbox_ok else set())
    if name not in valid:
        what = "model or recogniser" if blackbox_ok else "differentiable model (black boxes cannot be sources)"
        raise ConfigError(f"{key}: unknown {what} {name!r}{_suggest(name, valid)}")


def _data(raw: Mapping[str, Any], default_seed: int) -> DataConfig:
    _check_keys(raw, DataConfig, "data")
    d = DataConfig(seed=default_seed)
    return DataConfig(
        identities=_count_or_all(raw.get("identities", d.identities), "data.identities"),
        per_identity=_count_or_all(raw.get("per_identity", d.per_identity), "data.per_identity"),
        min_photos=_int(raw.get("min_photos", d.min_photos), "data.min_photos", 2),
        seed=_int(raw.get("seed", d.seed), "data.seed", 0),
    )


def _layers(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value != "default":
            raise ConfigError(f"leam.layers must be \"default\" or a list of layer names, got {value!r}")
        return value
    items = _list(value, "leam.layers")
    for item in items:
        if not isinstance(item, str) or not item or item != item.strip():
            raise ConfigError(
                f"leam.layers entries are dotted module paths or {', '.join(LAYER_TOKENS)}, got {item!r}"
            )
    return tuple(items)


def _grid(value: Any) -> int:
    """`8` or `[8, 8]`: cells per side of the `stratified` selection (`LeamSettings.grid` is square)."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"leam.grid must be a cell count or [rows, cols], got {value!r}")
        rows, cols = _int(value[0], "leam.grid[0]", 1, 64), _int(value[1], "leam.grid[1]", 1, 64)
        if rows != cols:
            raise ConfigError(f"leam.grid must be square (the stratified selector takes one cell count), got "
                              f"{list(value)}; e.g. grid = 8")
        return rows
    return _int(value, "leam.grid", 1, 64)


def leam_to_dict(settings: LeamSettings) -> dict[str, Any]:
    """The recipe keys of `settings` (`LEAM_KEYS`) as a JSON-ready dict; `_leam` reads it back."""
    d = {k: getattr(settings, k) for k in LEAM_KEYS}
    d["grid"] = [settings.grid, settings.grid]
    d["layers"] = d["layers"] if isinstance(d["layers"], str) else list(d["layers"])
    return d


def _leam(raw: Mapping[str, Any]) -> LeamSettings:
    """The `[leam]` table parsed straight into `LeamSettings`, which validates the names (one `ConfigError`)."""
    _check_names(raw, LEAM_KEYS, "leam")
    d = LeamSettings()
    gamma = _number(raw.get("gamma", d.gamma), "leam.gamma")
    if gamma < 0:
        raise ConfigError(f"leam.gamma must be >= 0, got {gamma:g}")
    try:
        return LeamSettings(
            method=_str(raw.get("method", d.method), "leam.method"),
            layers=_layers(raw.get("layers", d.layers)),
            target=_str(raw.get("target", d.target), "leam.target"),
            selection=_str(raw.get("selection", d.selection), "leam.selection"),
            grid=_grid(raw.get("grid", d.grid)),
            gamma=gamma,
            restrict_to_face=_bool(raw.get("restrict_to_face", d.restrict_to_face), "leam.restrict_to_face"),
            common_template=_str(raw.get("common_template", d.common_template), "leam.common_template"),
        )
    except UnknownNameError as exc:  # the LEAM registries' lookup error: one error type for recipes
        raise ConfigError(f"leam: {exc.args[0] if exc.args else exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"leam: {exc}") from None


def _evaluation(raw: Mapping[str, Any], known: KnownNames) -> EvaluationConfig:
    _check_keys(raw, EvaluationConfig, "evaluation")
    d = EvaluationConfig()
    fars = tuple(_number(f, "evaluation.far") for f in _list(raw.get("far", list(d.far)), "evaluation.far"))
    for f in fars:
        if not 0 < f < 1:
            raise ConfigError(f"evaluation.far values are false-accept rates in (0, 1), got {f:g}")
        if known.fars is not None and not any(math.isclose(f, k, rel_tol=1e-9) for k in known.fars):
            have = ", ".join(f"{k:g}" for k in sorted(known.fars, reverse=True))
            raise ConfigError(f"evaluation.far {f:g} has no calibrated threshold (calibrated: {have})")
    return EvaluationConfig(
        format=_choice(raw.get("format", d.format), "evaluation.format", FORMATS),
        jpeg_quality=_int(raw.get("jpeg_quality", d.jpeg_quality), "evaluation.jpeg_quality", 1, 100),
        redetect=_bool(raw.get("redetect", d.redetect), "evaluation.redetect"),
        far=fars,
    )


def _cloak(raw: Mapping[str, Any]) -> CloakSettings:
    """The `[cloak]` table over `RECIPE_CLOAK`; `CloakSettings` validates the values (one `ConfigError`)."""
    _check_names(raw, CLOAK_KEYS, "cloak")
    d = RECIPE_CLOAK
    eps_raw = raw.get("epsilon", d.epsilon)
    epsilon = None if eps_raw is None or eps_raw == "none" else _positive(eps_raw, "cloak.epsilon", 255.0)
    return replace(
        d,
        steps=_int(raw.get("steps", d.steps), "cloak.steps", 1, 10_000),
        step_size=_positive(raw.get("step_size", d.step_size), "cloak.step_size", 255.0),
        epsilon=epsilon,
        diversity=_bool(raw.get("diversity", d.diversity), "cloak.diversity"),
        early_stop=_bool(raw.get("early_stop", d.early_stop), "cloak.early_stop"),
        eot=tuple(_str(t, "cloak.eot") for t in _list(raw.get("eot", list(d.eot)), "cloak.eot")),
        decoy=float(_number(raw.get("decoy", d.decoy), "cloak.decoy")),
    )


def _robustness(raw: Any) -> RobustnessConfig | None:
    if raw is None:
        return None
    table = _table(raw, "robustness")
    _check_keys(table, RobustnessConfig, "robustness")
    defences = tuple(_str(d, "robustness.defences") for d in _list(table.get("defences", []), "robustness.defences"))
    for d in defences:
        parse_defence(d)
    return RobustnessConfig(defences=defences)


def _sources(raw: Any, known: KnownNames) -> tuple[str, ...]:
    out = tuple(_str(s, "sources") for s in _list(raw, "sources"))
    for s in out:
        for m in parse_source(s).models:
            _model(m, f"sources ({s!r})", known, blackbox_ok=False)
    return out


def _targets(raw: Any, known: KnownNames) -> tuple[str, ...]:
    out = tuple(_str(t, "targets") for t in _list(raw, "targets"))
    for t in out:
        _model(t, "targets", known, blackbox_ok=True)
    return out


def recipe_from_dict(raw: Mapping[str, Any], *, name: str | None = None, known: KnownNames | None = None) -> Recipe:
    """Validate a parsed TOML table into a `Recipe`. `name` is used when the table has no `name` key."""
    known = known or known_names()
    _check_keys(raw, Recipe, "")
    if "sources" not in raw or "targets" not in raw:
        raise ConfigError("a recipe needs `sources` and `targets` (lists of model ids)")
    d = Recipe(name="", sources=(), targets=())
    seed = _int(raw.get("seed", d.seed), "seed", 0)
    rname = _str(raw.get("name", name or ""), "name")
    if not rname:
        raise ConfigError("a recipe needs a `name`")

    budgets = tuple(_positive(b, "budgets", 100.0) for b in _list(raw.get("budgets", list(d.budgets)), "budgets"))
    fills = tuple(_choice(f, "fills", known.fills) for f in _list(raw.get("fills", list(d.fills)), "fills"))
    controls = tuple(
        _choice(c, "controls", CONTROLS) for c in _list(raw.get("controls", list(d.controls)), "controls",
                                                        allow_empty=True)
    )
    recipe = Recipe(
        name=rname,
        description=_str(raw.get("description", d.description), "description"),
        data=_data(_table(raw.get("data", {}), "data"), seed),
        sources=_sources(raw["sources"], known),
        targets=_targets(raw["targets"], known),
        budgets=budgets,
        fills=fills,
        leam=_leam(_table(raw.get("leam", {}), "leam")),
        controls=controls,
        evaluation=_evaluation(_table(raw.get("evaluation", {}), "evaluation"), known),
        cloak=_cloak(_table(raw.get("cloak", {}), "cloak")),
        robustness=_robustness(raw.get("robustness")),
        max_pairs_per_identity=_int(raw.get("max_pairs_per_identity", d.max_pairs_per_identity),
                                    "max_pairs_per_identity", 1),
        seed=seed,
    )
    pool = recipe.pool(known.blackbox or ())
    if LEAVE_ONE_OUT in recipe.sources and len(pool) < 2:
        raise ConfigError(
            f"source {LEAVE_ONE_OUT!r} needs at least two differentiable models among the targets "
            f"(have: {', '.join(pool) or 'none'})"
        )
    return recipe


# --------------------------------------------------------------------------------------------------------------
# Overrides


def parse_value(text: str) -> Any:
    """A CLI value as TOML (`5`, `[1, 2]`, `true`, `"x"`); text that is not a TOML value is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`["data.identities=5", "budgets=[1,2]"]` -> `{"data.identities": "5", "budgets": "[1,2]"}`.

    Values stay text; `apply_overrides` parses them as TOML, so they are parsed exactly once.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. data.identities=5 or budgets=[1,2]")
        out[key] = value
    return out


_SECTIONS: dict[str, Sequence[str]] = {
    "data": [f.name for f in fields(DataConfig)], "leam": LEAM_KEYS,
    "evaluation": [f.name for f in fields(EvaluationConfig)], "cloak": CLOAK_KEYS,
    "robustness": [f.name for f in fields(RobustnessConfig)],
}


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with dotted keys set; a string value is parsed as TOML. Unknown keys are refused."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    top = [f.name for f in fields(Recipe)]
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in top:
            raise ConfigError(f"unknown key {dotted!r} in override{_suggest(parts[0], top)}")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] not in _SECTIONS):
            raise ConfigError(f"override {dotted!r}: only the sections {', '.join(_SECTIONS)} have sub-keys")
        value = parse_value(value) if isinstance(value, str) else value
        if len(parts) == 1:
            out[parts[0]] = value
            continue
        section, key = parts
        valid = list(_SECTIONS[section])
        if key not in valid:
            raise ConfigError(f"unknown key {dotted!r} in override{_suggest(key, valid)}")
        if out.get(section) is None:  # absent, or an optional section (robustness) switched off
            out[section] = {}
        table = out[section]
        if not isinstance(table, dict):
            raise ConfigError(f"override {dotted!r}: {section} is not a table in the recipe")
        table[key] = value
    return out


# --------------------------------------------------------------------------------------------------------------
# Loading


def _recipe_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:  # an installed `recipes` folder shipped as package data, when the project is packaged that way
        from importlib import resources

        installed = Path(str(resources.files("recipes")))
        if installed.is_dir():
            dirs.append(installed)
    except (ImportError, TypeError, ValueError, OSError):
        pass
    if RECIPES_DIR not in dirs:
        dirs.append(RECIPES_DIR)
    return dirs


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the project."""
    names = {p.stem for d in _recipe_dirs() if d.is_dir() for p in d.glob("*.toml")}
    return sorted(names)


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe name (`paper`) -> its file; a path (anything with a suffix or a separator) -> itself."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    for d in _recipe_dirs():
        candidate = d / f"{text}.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"unknown recipe {text!r}{_suggest(text, list_recipes())}; or pass a path to a .toml file")


def load_recipe(
    name_or_path: str | Path, overrides: Mapping[str, Any] | None = None, *, known: KnownNames | None = None
) -> Recipe:
    """Read a recipe by name or path, apply CLI overrides (dotted keys), and validate (CLI > recipe > defaults)."""
    path = recipe_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from None
    raw = apply_overrides(raw, overrides or {})
    try:
        return recipe_from_dict(raw, name=path.stem, known=known)
    except ConfigError as exc:
        raise ConfigError(f"recipe {path.name}: {exc}") from None


__all__ = [
    "CLOAK_KEYS",
    "CONTROLS",
    "LEAM_KEYS",
    "LEAVE_ONE_OUT",
    "RECIPE_CLOAK",
    "SAME_NETWORK",
    "DataConfig",
    "Defence",
    "EvaluationConfig",
    "KnownNames",
    "Recipe",
    "RobustnessConfig",
    "SourceSpec",
    "apply_overrides",
    "is_transfer",
    "known_names",
    "leam_to_dict",
    "list_recipes",
    "load_recipe",
    "parse_defence",
    "parse_overrides",
    "parse_source",
    "parse_value",
    "recipe_from_dict",
    "recipe_path",
    "resolve_layers",
    "underlying_model",
]
