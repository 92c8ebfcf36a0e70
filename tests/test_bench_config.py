"""Recipe validation: unknown keys refused at every depth, ranges checked, overrides applied with precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import (
    KnownNames,
    Recipe,
    list_recipes,
    load_recipe,
    parse_defence,
    parse_overrides,
    parse_source,
    recipe_from_dict,
    resolve_layers,
)
from facecloak.errors import ConfigError

KNOWN = KnownNames(
    models=frozenset({"mbf-arc", "mobileface", "hse-mnv1", "dlib-r29"}),
    blackbox=frozenset({"mbf-arc-onnx", "dlib-native"}),
    fills=frozenset({"black", "inpaint", "cloak"}),
    fars=frozenset({0.01, 0.001}),
)

MINIMAL = {"name": "t", "sources": ["mbf-arc"], "targets": ["mbf-arc", "mobileface"]}

RECIPE_TOML = """
name = "tiny"
seed = 3
sources = ["mbf-arc", "ensemble:mbf-arc+mobileface", "all-but-T"]
targets = ["mbf-arc", "mobileface", "hse-mnv1", "mbf-arc-onnx"]
budgets = [0.5, 1]
fills = ["black", "cloak"]

[data]
identities = 4

[leam]
method = "layercam"

[cloak]
steps = 5
"""


def build(**changes: object) -> Recipe:
    return recipe_from_dict({**MINIMAL, **changes}, known=KNOWN)


@pytest.fixture()
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(RECIPE_TOML, encoding="utf-8")
    return path


def test_defaults_fill_what_the_recipe_leaves_out() -> None:
    r = build()
    assert r.budgets == (0.5, 1.0, 2.0, 5.0)
    assert r.fills == ("black",)
    assert r.leam.method == "layercam" and r.leam.layers == "default" and r.leam.target == "contrast"
    assert r.data.identities is None and r.data.min_photos == 2
    assert r.robustness is None


def test_unknown_top_level_key_is_refused_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'budget'.*did you mean 'budgets'"):
        build(budget=[1])


def test_unknown_nested_key_is_refused_with_its_dotted_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'leam\.metod'.*did you mean 'method'"):
        build(leam={"metod": "gradcam"})
    with pytest.raises(ConfigError, match=r"unknown key 'data\.identites'"):
        build(data={"identites": 3})


@pytest.mark.parametrize("budget", [0, -1, 100.5, float("inf")])
def test_out_of_range_budget_is_refused(budget: float) -> None:
    with pytest.raises(ConfigError, match="budgets"):
        build(budgets=[1, budget])


def test_budget_100_is_allowed_and_ints_become_floats() -> None:
    assert build(budgets=[1, 100]).budgets == (1.0, 100.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fills": ["blak"]}, r"fills: unknown value 'blak'.*did you mean 'black'"),
        ({"fills": []}, "must not be empty"),
        ({"fills": ["black", "black"]}, "more than once"),
        ({"sources": ["mbf-arc-onnx"]}, "black boxes cannot be sources"),
        ({"sources": ["ensemble:mbf-arc"]}, "two or more"),
        ({"targets": ["mobilefase"]}, "did you mean 'mobileface'"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"data": {"min_photos": 1}}, "data.min_photos"),
        ({"evaluation": {"far": [0.05]}}, "no calibrated threshold"),
        ({"evaluation": {"jpeg_quality": 101}}, "jpeg_quality"),
        ({"controls": ["random"]}, "random-scatter"),
        ({"robustness": {"defences": ["jpeg101"]}}, "out of range"),
        ({"cloak": {"epsilon": 300}}, "cloak.epsilon"),
        ({"leam": "gradcam"}, "leam must be a table"),
        ({"leam": {"method": "layercamm"}}, r"leam: unknown .*'layercamm'.*layercam"),
        ({"leam": {"selection": "top"}}, r"leam: unknown .*'top'"),
        ({"leam": {"target": "nobody"}}, r"leam: unknown LEAM target 'nobody'"),
        ({"leam": {"common_template": "arcface113"}}, r"leam: unknown .*'arcface113'"),
        ({"leam": {"grid": [8, 4]}}, r"leam.grid must be square"),
        ({"leam": {"grid": 0}}, r"leam.grid must be in \[1, 64\]"),
        ({"leam": {"budget": 2}}, r"unknown key 'leam\.budget'"),
    ],
)
def test_invalid_values_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(**changes)


def test_leave_one_out_needs_two_differentiable_targets() -> None:
    with pytest.raises(ConfigError, match="at least two"):
        build(sources=["all-but-T"], targets=["mbf-arc", "mbf-arc-onnx"])


def test_leave_one_out_members_leave_out_the_targets_network() -> None:
    r = recipe_from_dict(
        {**MINIMAL, "sources": ["all-but-T"], "targets": ["mbf-arc", "mobileface", "hse-mnv1", "mbf-arc-onnx"]},
        known=KNOWN,
    )
    pool = r.pool(KNOWN.blackbox)
    assert pool == ("mbf-arc", "mobileface", "hse-mnv1")
    loo = parse_source("all-but-T")
    assert loo.members("mobileface", pool) == ("mbf-arc", "hse-mnv1")
    # The ONNX original runs mbf-arc's network, so the ensemble for it must not contain mbf-arc.
    assert loo.members("mbf-arc-onnx", pool) == ("mobileface", "hse-mnv1")
    assert parse_source("ensemble:a+b").members("x", pool) == ("a", "b")


def test_overrides_take_precedence_over_recipe_over_defaults(recipe_file: Path) -> None:
    base = load_recipe(recipe_file, known=KNOWN)
    assert base.data.identities == 4  # recipe
    assert base.data.per_identity is None  # default
    assert base.data.seed == 3  # defaults to the top-level seed
    over = load_recipe(
        recipe_file,
        parse_overrides(["data.identities=5", "budgets=[1,2]", "leam.method=gradcam", "data.per_identity=2",
                         "robustness.defences=[\"jpeg75\"]", "seed=7"]),
        known=KNOWN,
    )
    assert over.data.identities == 5
    assert over.data.per_identity == 2
    assert over.budgets == (1.0, 2.0)
    assert over.leam.method == "gradcam"
    assert over.cloak.steps == 5  # untouched recipe value
    assert over.seed == 7 and over.data.seed == 7
    assert over.robustness is not None and over.robustness.parsed()[0].value == 75


def test_overrides_are_validated_like_the_file(recipe_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'data\.identity'.*did you mean .*'identities'"):
        load_recipe(recipe_file, {"data.identity": "5"}, known=KNOWN)
    with pytest.raises(ConfigError, match="budgets"):
        load_recipe(recipe_file, {"budgets": "[0]"}, known=KNOWN)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["budgets"])


def test_fingerprint_is_stable_and_sensitive(recipe_file: Path) -> None:
    a = load_recipe(recipe_file, known=KNOWN)
    b = load_recipe(recipe_file, known=KNOWN)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    # Same values written differently (1 vs 1.0) give the same fingerprint.
    assert load_recipe(recipe_file, {"budgets": "[0.5, 1.0]"}, known=KNOWN).fingerprint() == a.fingerprint()
    assert load_recipe(recipe_file, {"seed": "4"}, known=KNOWN).fingerprint() != a.fingerprint()
    # Cells survive growing the matrix, not changing the protocol.
    wider = load_recipe(recipe_file, {"budgets": "[0.5, 1, 2]"}, known=KNOWN)
    assert wider.fingerprint() != a.fingerprint()
    assert wider.cell_fingerprint() == a.cell_fingerprint()
    flip = load_recipe(recipe_file, {"leam.target": "flip"}, known=KNOWN)
    assert flip.cell_fingerprint() != a.cell_fingerprint()


def test_to_dict_round_trips(recipe_file: Path) -> None:
    r = load_recipe(recipe_file, known=KNOWN)
    assert recipe_from_dict(r.to_dict(), known=KNOWN) == r
    assert r.to_dict()["budgets"] == [0.5, 1.0]


def test_unknown_recipe_name_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'papr'.*did you mean 'paper'"):
        load_recipe("papr")


def test_shipped_recipes_validate_against_the_live_registries() -> None:
    names = list_recipes()
    assert {"paper", "cloak", "quick", "robustness"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.name == name
    quick = load_recipe("quick")
    assert len(quick.sources) == 2 and quick.data.identities == 4 and quick.data.per_identity == 3
    assert quick.budgets == (1.0,) and set(quick.fills) == {"black", "cloak"}
    paper = load_recipe("paper")
    assert paper.budgets == (0.5, 1.0, 2.0, 5.0) and paper.fills == ("black",)
    assert {"mbf-arc-onnx", "dlib-native"} <= set(paper.targets)
    assert set(paper.controls) == {"random-scatter", "random-shape", "other-person", "lastlayer-gradcam"}
    robust = load_recipe("robustness")
    assert robust.robustness is not None
    assert [d.kind for d in robust.robustness.parsed()] == ["jpeg", "jpeg", "jpeg", "resize", "blur", "inpaint-mask"]


def test_defence_and_layer_parsing() -> None:
    assert parse_defence("resize50").value == 50.0
    assert parse_defence("blur1").kind == "blur"
    with pytest.raises(ConfigError):
        parse_defence("sharpen")
    assert resolve_layers("default", ("a", "b", "c")) == ("a", "b", "c")
    assert resolve_layers(["last", "input", "default"], ("a", "b", "c")) == ("c", "input", "a", "b")


def test_leam_table_parses_into_the_one_settings_type() -> None:
    from facecloak.masking.leamface import LeamSettings

    r = build(leam={"method": "gradcam", "grid": [4, 4], "selection": "stratified", "layers": ["last", "input"]})
    assert isinstance(r.leam, LeamSettings)
    assert (r.leam.method, r.leam.grid, r.leam.selection, r.leam.layers) == ("gradcam", 4, "stratified",
                                                                           ("last", "input"))
    assert build(leam={"grid": 4}).leam == r.leam.__class__(grid=4)
    # the recipe dict keeps the recipe keys and the [rows, cols] grid, so fingerprints (shard keys) stay as they were
    assert r.to_dict()["leam"] == {"method": "gradcam", "layers": ["last", "input"], "target": "contrast",
                                   "selection": "stratified", "grid": [4, 4], "gamma": 1.0,
                                   "restrict_to_face": True, "common_template": "arcface112"}
    assert recipe_from_dict(r.to_dict(), known=KNOWN) == r


def test_paper_fingerprint_is_unchanged_by_the_settings_type() -> None:
    """The committed bench/results shards were keyed with this fingerprint (bench.config before LeamSettings)."""
    assert load_recipe("paper").cell_fingerprint().startswith("a7161c0cf787")
