"""Spec fields that were accepted and then silently ignored or failed only mid-run: each is refused by
the spec check (before any work), naming the experiment / field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfusion_attacks.harness.spec import SpecError, load_spec, parse_spec, spec_to_yaml

EXPERIMENT = {"name": "scenes", "model": {"name": "tiny-rgbt-classifier"},
              "data": {"name": "synthetic-rgbt-scenes", "split": "test", "size": 8, "height": 16, "width": 16},
              "attacks": ["fgsm", "pgd"], "eps_255": [4], "subsets": ["rgb"], "sanity": False}


def _parse(**fields) -> object:
    return parse_spec({"name": "t", "experiments": [{**EXPERIMENT, **fields}]})


def _problems(**fields) -> str:
    with pytest.raises(SpecError) as info:
        _parse(**fields)
    return str(info.value)


def test_attack_kwargs_keys_are_lower_cased_like_attacks():
    spec = _parse(attacks=["PGD"], attack_kwargs={"PGD": {"step_size": 0.001}})
    assert spec.experiments[0].attacks == ["pgd"]
    assert spec.experiments[0].attack_kwargs == {"pgd": {"step_size": 0.001}}
    assert "given twice" in _problems(attack_kwargs={"PGD": {"step_size": 0.1}, "pgd": {"step_size": 0.2}})


def test_attack_kwargs_naming_no_attack_of_the_experiment_is_refused():
    text = _problems(attack_kwargs={"pdg": {"step_size": 0.001}})
    assert "experiments[0].attack_kwargs.pdg: experiment 'scenes' runs no attack 'pdg'" in text
    assert "['fgsm', 'pgd']" in text
    # a combination's step, the sanity attack and the transfer attack are attacks of the experiment too
    ok = _parse(attacks=[], eps_255=[], subsets=[], sanity={"attack": "bim", "steps": 2},
                combos=[{"name": "c", "steps": [{"kind": "attack", "name": "EOTPGD", "attacked": ["rgb"], "amount": 0.01}]}],
                attack_kwargs={"eotpgd": {"eot_iter": 2}, "bim": {"step_size": 0.01}})
    assert set(ok.experiments[0].attack_kwargs) == {"eotpgd", "bim"}


def test_attack_kwargs_the_harness_sets_are_refused_before_work():
    """The spec docstring's old example {pgd: {alpha: 0.01}} passed the check and died mid-run with
    'PGD() got multiple values for keyword argument alpha'."""
    text = _problems(attack_kwargs={"pgd": {"alpha": 0.01, "eps": 0.1, "random_start": False}})
    assert "attack_kwargs.pgd.alpha: experiment 'scenes': the harness sets pgd's 'alpha' itself" in text and "step_size" in text
    assert "attack_kwargs.pgd.eps:" in text and "random_start" not in text
    text = _problems(attack_kwargs={"pgd": {"random_strat": False}})
    assert "pgd (torchattacks) takes no option 'random_strat'" in text and "random_start" in text
    text = _problems(toolkit="art", attack_kwargs={"pgd": {"eps_step": 0.01}})
    assert "the harness sets pgd's 'eps_step' itself" in text
    # the transfer experiment's own attack_kwargs are checked against its attacks
    transfer = {"sources": {"a": {"name": "tiny-rgbt-classifier"}}, "attack": "PGD", "eps_255": 4, "attacked": ["rgb"],
                "attack_kwargs": {"PGD": {"alpha": 0.1}}}
    assert "transfer.attack_kwargs.PGD.alpha" in _problems(attacks=[], eps_255=[], subsets=[], transfer=transfer)


def test_the_documented_attack_kwargs_example_passes():
    import mmfusion_attacks.harness.spec as spec_module

    line = next(x for x in spec_module.__doc__.splitlines() if "attack_kwargs:" in x)
    import yaml

    example = yaml.safe_load(line.split("#")[0])["attack_kwargs"]
    assert _parse(attack_kwargs=example).experiments[0].attack_kwargs == example


def test_empty_seeds_and_unknown_data_options_are_refused_at_parse_time():
    assert "experiments[0].seeds: empty: give at least one seed" in _problems(seeds=[])
    text = _problems(data={**EXPERIMENT["data"], "size": None, "sise": 8})
    assert "experiments[0].data.sise: dataset 'synthetic-rgbt-scenes' takes no option 'sise'" in text and "'size'" in text
    # the second experiment's misspelled key is found although the first is fine: nothing runs
    with pytest.raises(SpecError, match=r"experiments\[1\]\.data\.sise"):
        parse_spec({"experiments": [EXPERIMENT, {**EXPERIMENT, "name": "b", "data": {"name": "synthetic-rgbt-scenes", "sise": 8}}]})
    assert "dataset 'mf' needs the option 'root'" in _problems(data={"name": "mf", "split": "test"})


@pytest.mark.parametrize("value", [[-2], [True], [1.5], ["a"]])
def test_include_classes_must_be_non_negative_integers(value):
    assert "experiments[0].include_classes[0]: must be a class index (an integer >= 0)" in _problems(include_classes=value)


def test_include_classes_must_be_a_list():
    assert "experiments[0].include_classes: must be a list" in _problems(include_classes=3)


def test_grid_model_weights_are_relative_to_the_spec_folder(tmp_path, monkeypatch):
    folder = tmp_path / "specdir"
    folder.mkdir()
    (folder / "w.pth").write_bytes(b"")
    (folder / "spec.yaml").write_text("""\
experiments:
  - name: grid
    model: {name: tiny-rgbt-classifier, weights: w.pth}
    data: {name: synthetic-rgbt-scenes, split: test, size: 4, height: 16, width: 16}
    attacks: [fgsm]
    eps_255: [4]
    subsets: [rgb]
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(folder / "spec.yaml")
    assert Path(spec.experiments[0].model["weights"]) == folder / "w.pth"
    monkeypatch.chdir(tmp_path)  # a relative spec path: the folder is joined once, not twice
    spec = load_spec(Path("specdir") / "spec.yaml")
    assert Path(spec.experiments[0].model["weights"]) == Path("specdir") / "w.pth"


def test_per_experiment_table_is_refused_pointing_to_the_top_level_table():
    text = _problems(table="rgbt-study")
    assert "experiments[0].table: not a field of an experiment: the console table is the top-level 'table:'" in text
    assert parse_spec({"table": "rgbt", "experiments": [EXPERIMENT]}).table == "rgbt"


def test_rgbt_preset_spec_still_round_trips():
    from mmfusion_attacks.harness.rgbt import build_parser, build_spec

    spec = build_spec(build_parser().parse_args(["--analyses", "grid", "least-likely"]))
    again = parse_spec(__import__("yaml").safe_load(spec_to_yaml(spec)))
    assert spec_to_yaml(again) == spec_to_yaml(spec)
