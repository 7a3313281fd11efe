"""recipes: each recipe's declaration (the class it builds, the options it sets) matches the class, so
a spec's extra options are checked against what the toolkit really takes."""

from __future__ import annotations

import importlib
import inspect

import pytest

from mmfusion_attacks.recipes import list_recipes, recipe_declaration, recipe_options


@pytest.mark.parametrize(("name", "toolkit"), list_recipes())
def test_each_recipe_declares_what_it_builds_and_sets(name, toolkit):
    builds, sets = recipe_declaration(name, toolkit)
    assert builds is not None
    module, _, attr = builds.partition(":")
    params = inspect.signature(getattr(importlib.import_module(module), attr)).parameters
    assert set(sets) <= set(params), f"{name} ({toolkit}) sets options its class does not take"
    reserved, accepted = recipe_options(name, toolkit)
    assert {"eps", "steps"} <= reserved and set(sets) <= reserved
    assert accepted is None or (accepted.isdisjoint(reserved) and "step_size" in accepted)


def test_recipe_options_of_pgd():
    reserved, accepted = recipe_options("pgd", "torchattacks")
    assert "alpha" in reserved and accepted == {"random_start", "step_size"}
    with pytest.raises(KeyError, match="no recipe"):
        recipe_options("nope", "torchattacks")
