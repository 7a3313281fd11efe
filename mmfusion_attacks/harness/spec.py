"""Grid specs: model x dataset x attack x budget x attacked-modality subset x seed, from a YAML file
(``mmfusion-attacks run SPEC.yaml``) or built by a preset (``--print-spec`` prints it).

A spec is checked as a whole before any work: every problem (an unknown model, dataset, attack or
modality, a negative eps, a missing data path, a field of the wrong type, a key nobody reads) is listed
in one :class:`SpecError`, each naming its field and its line in the file. The format, with defaults::

    name: my-study                 # the report's title
    seed: 0                        # seeds the attacks' randomness (per cell and batch: resumable, shardable)
    device: auto                   # cpu, cuda, cuda:N, mps, auto
    amp: false                     # bfloat16 autocast for the models
    experiments:
      - name: rgbt                 # unique; names the rows and the records
        model: {name: mfnet, source: synthetic-rgbt, train_steps: 400, size: [96, 128]}
        data: {name: synthetic-rgbt, split: test, size: 32, height: 96, width: 128}
        batch_size: 8
        shard_size: 16             # examples per record (a multiple of batch_size): the unit of resume and of sharding
        labels: auto               # auto (ground truth when the data has it) | pseudo (clean predictions)
        include_classes: null      # segmentation: the classes of mIoU / mAcc (null: all)
        toolkit: torchattacks
        steps: 10
        attacks: [fgsm, pgd]
        eps_255: [10, 20, 40]      # or eps: [0.04, 0.08] in the modalities' own units
        subsets: [rgb, ir, rgb+ir]
        seeds: [0]                 # one row per seed; checks and curves are per seed
        attack_kwargs: {pgd: {step_size: 0.01, random_start: false}}  # per attack (a name above); not eps / steps / alpha: set from the fields
        combos:    [{name: ..., steps: [{kind: attack|text-attack|text-augment, name, attacked, amount, toolkit, steps, seed}]}]
        joint:     [{name: ..., plan: [{modality, attack, budget, toolkit, steps, options}], orchestration, rounds, order}]
        worst_case: [{group: worst case, plan: [...], orchestration, rounds, success_fraction, skip_broken}]
        sanity: {attack: bim, steps: 20}   # an attack at an unbounded budget (the gradient-masking check); false: none
        qualitative: 1             # examples per attacked subset drawn in the report
        limit: null                # use only the first N examples of the data
        transfer: null             # a transfer experiment instead of a grid (below)

A **transfer experiment** (``transfer:``) crafts adversarials on each source model and scores each
target model on them (white box on the diagonal); its records hold confusion matrices per shard::

        transfer:
          sources: {mfnet: {name: mfnet, source: synthetic-rgbt}, mfnet@50%: {name: mfnet, source: synthetic-rgbt,
                    wrap: [{kind: at-scale, scale: 0.5, multiple: 16}]}}
          targets: {...}           # default: the sources
          attack: fgsm             # or one per source: {mfnet: pgd, defended: eotpgd}
          eps_255: 8               # or eps
          attacked: [rgb, ir]
          eval_repeats: 1          # score stochastic targets over several draws
          metric: iou_ratio        # iou_ratio (adv mIoU / clean mIoU) | accuracy

Any model entry may carry ``wrap``: a list of wrappers applied in order (``at-scale`` {scale, multiple},
``multiscale`` {scales, multiple}, ``random-resize-pad`` {low, high, multiple}, ``undefended``: the
network without its preprocessing defences).

A top-level ``table: NAME`` names a preset's table (:mod:`.tables`: rgbt, vl, joint, contrastive,
defences), printed after the run by ``mmfusion-attacks run`` and by the preset script alike.

Model sources (``model.source``): ``registry`` (``create_model(name, **options)``, with ``weights`` a
checkpoint, else randomly initialised from the seed), ``synthetic-rgbt`` / ``synthetic-vl`` /
``synthetic-rgbt-classifier`` / ``synthetic-trimodal`` (the embedded defaults, trained here and cached)
and ``callable`` (``factory: package.module:function`` returning a FusionModel: any multi-input model).
Datasets (``data.name``): any registered dataset (``create_dataset(name, **the other keys)``) and
``rgbt-frames`` (``paths``: RGB-T PNG frames, pseudo-labels).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

__all__ = [
    "SpecError",
    "ExperimentSpec",
    "RunSpec",
    "load_spec",
    "parse_spec",
    "spec_to_yaml",
    "MODEL_SOURCES",
    "WRAPPERS",
    "TABLES",
]

MODEL_SOURCES = {
    "registry": {"weights": str, "options": dict, "num_classes": int, "seed": int},
    "synthetic-rgbt": {"train_steps": int, "size": list, "seed": int},
    "synthetic-vl": {"image_size": int, "train_size": int, "seed": int},
    "synthetic-rgbt-classifier": {"train_size": int, "epochs": int, "adversarial": list, "eps_255": float, "pgd_steps": int,
                                  "defences": dict, "seed": int},
    "synthetic-trimodal": {"train_size": int, "seed": int},
    "callable": {"factory": str, "options": dict},
}
#: model wrappers (``wrap:``) and their fields
WRAPPERS = {
    "at-scale": {"scale": float, "multiple": int},
    "multiscale": {"scales": list, "multiple": int},
    "random-resize-pad": {"low": float, "high": float, "multiple": int},
    "undefended": {},
}
#: per-modality preprocessing defences of ``synthetic-rgbt-classifier`` (``defences: {ir: {median: 3}}``)
DEFENCES = {"median": int, "gaussian": float}
_TRANSFER_FIELDS = {"sources": dict, "targets": dict, "attack": (str, dict), "eps_255": float, "eps": float, "attacked": list,
                    "eval_repeats": int, "metric": str, "attack_kwargs": dict, "steps": int, "toolkit": str}
TABLES = ("default", "rgbt-study", "vl-study")  # kept for importers; the console table is the top-level ``table:``
_PATH_KEYS = ("root", "data_root", "path", "paths", "weights")


class SpecError(InputError):
    """A spec that cannot run: ``problems`` lists every one, each naming its field and line."""

    def __init__(self, problems: Sequence[str], source: str = "spec") -> None:
        self.problems = list(problems)
        head = f"{source}: {len(self.problems)} problem(s), nothing was run:"
        super().__init__(head + "\n  " + "\n  ".join(self.problems))


@dataclass
class ExperimentSpec:
    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    title: str = ""
    batch_size: int = 8
    shard_size: int | None = None
    labels: str = "auto"
    include_classes: list[int] | None = None
    toolkit: str = "torchattacks"
    steps: int = 10
    attacks: list[str] = field(default_factory=list)
    eps_255: list[float] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    attack_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    combos: list[dict[str, Any]] = field(default_factory=list)
    joint: list[dict[str, Any]] = field(default_factory=list)
    worst_case: list[dict[str, Any]] = field(default_factory=list)
    sanity: dict[str, Any] | None = field(default_factory=lambda: {"attack": "bim", "steps": 10})
    qualitative: int = 1
    limit: int | None = None
    transfer: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return "transfer" if self.transfer else "grid"

    @property
    def shard(self) -> int:
        return self.shard_size or self.batch_size


@dataclass
class RunSpec:
    name: str
    experiments: list[ExperimentSpec]
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    table: str | None = None  # a preset's table (.tables), printed after the run
    source: str = "spec"  # the file it came from (for messages)

    def experiment(self, name: str) -> ExperimentSpec:
        return next(e for e in self.experiments if e.name == name)


# --- YAML with line numbers -------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


def _compose(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """The YAML document as Python values, and the line of every value by its path."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SpecError([f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"], source) from None
    lines: dict[tuple, int] = {}

    def convert(n: yaml.Node, path: tuple) -> Any:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                key = _Loader.construct_scalar(_Loader(""), k) if isinstance(k, yaml.ScalarNode) else str(k)
                if key in out:
                    raise SpecError([f"line {k.start_mark.line + 1}: {_name(path + (key,))} is given twice"], source)
                lines[path + (key,)] = k.start_mark.line + 1
                out[key] = convert(v, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [convert(v, path + (i,)) for i, v in enumerate(n.value)]
        return _Loader("").construct_object(n)

    if node is None:
        return None, lines
    return convert(node, ()), lines


def _name(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


class _Checker:
    def __init__(self, lines: Mapping[tuple, int], source: str) -> None:
        self.lines, self.source, self.problems = lines, source, []

    def add(self, path: tuple, message: str) -> None:
        """A problem at ``path``, with the line of the nearest enclosing value the file has."""
        where, line = path, self.lines.get(path)
        while line is None and where:
            where = where[:-1]
            line = self.lines.get(where)
        self.problems.append(f"{'line ' + str(line) + ': ' if line else ''}{_name(path) if path else 'spec'}: {message}")

    def typed(self, value: Any, kind: Any, path: tuple, what: str = "") -> bool:
        ok = _is(value, kind)
        if not ok:
            self.add(path, f"must be {what or _kind_name(kind)}, got {type(value).__name__} {value!r}"[:300])
        return ok


def _is(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind: Any) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list", dict: "a mapping"}.get(kind, str(kind))


_EXPERIMENT_FIELDS = {f.name: f for f in dataclasses.fields(ExperimentSpec)}
_TOP = {"name": str, "seed": int, "device": str, "amp": bool, "table": str, "experiments": list}


def parse_spec(value: Any, lines: Mapping[tuple, int] | None = None, *, source: str = "spec", base: Path | None = None) -> RunSpec:
    """A :class:`RunSpec` from parsed YAML (``lines``: each value's line, for messages); relative data /
    weights paths are taken from ``base`` (the spec file's folder)."""
    c = _Checker(lines or {}, source)
    if not isinstance(value, dict):
        raise SpecError([f"the spec must be a mapping with 'experiments', got {type(value).__name__}"], source)
    for key in value:
        if key not in _TOP:
            c.add((key,), f"unknown field; the top level has {sorted(_TOP)}")
    for key, kind in _TOP.items():
        if key in value and key != "experiments":
            c.typed(value[key], kind, (key,))
    experiments = value.get("experiments")
    if experiments is None:
        c.add(("experiments",), "missing: a list of experiments")
        experiments = []
    elif not c.typed(experiments, list, ("experiments",)) or not experiments:
        if isinstance(experiments, list):
            c.add(("experiments",), "empty: give at least one experiment")
        experiments = []
    parsed = []
    names: dict[str, int] = {}
    for i, exp in enumerate(experiments):
        e = _experiment(exp, ("experiments", i), c, base)
        if e is not None:
            if e.name in names:
                c.add(("experiments", i, "name"), f"'{e.name}' is also experiment {names[e.name]}'s name; names must be unique")
            names.setdefault(e.name, i)
            parsed.append(e)
    seed = value.get("seed", 0)
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        c.add(("seed",), f"must be in [0, 2**32), got {seed}")
    device = value.get("device", "auto")
    if isinstance(device, str):
        from .options import device_problem

        problem = device_problem(device, "device", allow_auto=True)
        if problem:
            c.add(("device",), problem.split(": ", 1)[1])
    table = value.get("table")
    if isinstance(table, str):
        from .tables import PRESET_TABLES

        if table not in PRESET_TABLES:
            c.add(("table",), f"unknown table {table!r}; choose from {sorted(PRESET_TABLES)}")
    if c.problems:
        raise SpecError(c.problems, source)
    return RunSpec(name=str(value.get("name", Path(source).stem)), experiments=parsed, seed=seed, device=device,
                   amp=bool(value.get("amp", False)), table=table if isinstance(table, str) else None, source=source)


def _experiment(exp: Any, path: tuple, c: _Checker, base: Path | None) -> ExperimentSpec | None:
    from ..data import DATASETS
    from ..recipes import list_recipes

    if not c.typed(exp, dict, path, "a mapping (name, model, data, attacks...)"):
        return None
    before = len(c.problems)
    for key in exp:
        if key == "table":  # once documented here, never read: the console table is chosen for the whole run
            c.add(path + (key,), "not a field of an experiment: the console table is the top-level 'table:' (one of "
                  f"{', '.join(_preset_tables())}); remove it here")
        elif key not in _EXPERIMENT_FIELDS:
            c.add(path + (key,), f"unknown field; an experiment has {sorted(_EXPERIMENT_FIELDS)}")
    for key in ("name", "model", "data"):
        if key not in exp:
            c.add(path, f"missing field '{key}'")
    simple = {"name": str, "title": str, "batch_size": int, "shard_size": int, "labels": str, "toolkit": str, "steps": int,
              "qualitative": int, "model": dict, "data": dict, "attacks": list, "eps_255": list, "eps": list,
              "subsets": list, "seeds": list, "attack_kwargs": dict, "combos": list, "joint": list, "worst_case": list,
              "limit": int, "transfer": dict, "include_classes": list}
    exp = dict(exp)
    for key, kind in simple.items():
        if key in exp and exp[key] is not None and not c.typed(exp[key], kind, path + (key,)):
            exp.pop(key)  # reported; the other fields are still checked
    if not all(k in exp for k in ("name", "model", "data")):
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", exp["name"]):
        c.add(path + ("name",), f"use letters, digits and - _ . + only (it names a folder), got {exp['name']!r}")
    for key, low in (("batch_size", 1), ("steps", 1), ("qualitative", 0), ("shard_size", 1), ("limit", 1)):
        if key in exp and exp[key] is not None and exp[key] < low:
            c.add(path + (key,), f"must be >= {low}, got {exp[key]}")
    if exp.get("shard_size") and exp.get("batch_size", 8) and exp["shard_size"] % exp.get("batch_size", 8):
        c.add(path + ("shard_size",), f"must be a multiple of batch_size ({exp.get('batch_size', 8)}), got {exp['shard_size']}")
    if exp.get("labels", "auto") not in ("auto", "pseudo"):
        c.add(path + ("labels",), f"must be 'auto' or 'pseudo', got {exp['labels']!r}")
    for j, k in enumerate(exp.get("include_classes") or []):
        if not _is(k, int) or k < 0:
            c.add(path + ("include_classes", j), f"must be a class index (an integer >= 0), got {k!r}")
    toolkit = exp.get("toolkit", "torchattacks")
    if toolkit not in ("torchattacks", "art"):
        c.add(path + ("toolkit",), f"must be 'torchattacks' or 'art', got {toolkit!r}")
    # model (a relative weights path is taken from the spec's folder, as for data and transfer models)
    model = _model_entry(exp["model"], path + ("model",), c, base)
    # data
    data = dict(exp["data"])
    dpath = path + ("data",)
    if not isinstance(data.get("name"), str):
        c.add(dpath + ("name",), "missing: a registered dataset name (e.g. synthetic-rgbt)")
    elif data["name"] != "rgbt-frames" and data["name"] not in DATASETS:
        c.add(dpath + ("name",), f"unknown dataset {data['name']!r}; registered: {', '.join([*DATASETS.names(), 'rgbt-frames'])}")
    else:
        _data_option_problems(data, dpath, c)
    for mapping, mp in ((data, dpath),):  # model paths (weights) are resolved by _model_entry
        for key in _PATH_KEYS:
            if key in mapping and mapping[key] is not None:
                values = mapping[key] if isinstance(mapping[key], list) else [mapping[key]]
                resolved = []
                for j, v in enumerate(values):
                    p = Path(str(v)).expanduser()
                    if base is not None and not p.is_absolute():
                        p = base / p
                    if not p.exists():
                        c.add(mp + ((key, j) if isinstance(mapping[key], list) else (key,)), f"no file or folder at {p}")
                    resolved.append(str(p))
                mapping[key] = resolved if isinstance(mapping[key], list) else resolved[0]
    # cells
    recipes = set(list_recipes())
    attacks = [str(a).lower() for a in exp.get("attacks") or []]
    for j, a in enumerate(exp.get("attacks") or []):
        if not isinstance(a, str) or (a.lower(), toolkit) not in recipes:
            c.add(path + ("attacks", j), f"no attack recipe {a!r} for toolkit {toolkit!r}; available: {sorted(n for n, t in recipes if t == toolkit)}")
    if exp.get("eps_255") and exp.get("eps"):
        c.add(path + ("eps",), "give eps_255 or eps, not both")
    for key, high in (("eps_255", 255.0), ("eps", None)):
        for j, e in enumerate(exp.get(key) or []):
            if c.typed(e, float, path + (key, j)) and (e < 0 or e != e or (high is not None and e > high)):
                c.add(path + (key, j), f"must be >= 0{f' and <= {high:g}' if high else ''}, got {e}")
    if attacks and not (exp.get("eps_255") or exp.get("eps")):
        c.add(path + ("attacks",), "attacks need budgets: give eps_255 or eps")
    if attacks and not exp.get("subsets"):
        c.add(path + ("subsets",), "attacks need attacked subsets, e.g. [rgb, ir, rgb+ir]")
    for j, s in enumerate(exp.get("subsets") or []):
        if not isinstance(s, str) or not all(s.split("+")):
            c.add(path + ("subsets", j), f"must be modality names joined by '+', e.g. rgb+ir, got {s!r}")
    if exp.get("seeds") == []:
        c.add(path + ("seeds",), "empty: give at least one seed (default [0])")
    for j, s in enumerate(exp.get("seeds") or []):
        if c.typed(s, int, path + ("seeds", j)) and not 0 <= s < 2**32:
            c.add(path + ("seeds", j), f"must be in [0, 2**32), got {s}")
    for kind in ("combos", "joint", "worst_case"):
        for j, item in enumerate(exp.get(kind) or []):
            _cell_problems(kind, item, path + (kind, j), c, recipes)
    transfer = exp.get("transfer")
    if transfer is not None:
        transfer = _transfer_entry(transfer, path + ("transfer",), c, recipes, toolkit, base)
    sanity = exp.get("sanity", ExperimentSpec.__dataclass_fields__["sanity"].default_factory())
    if sanity is True:
        sanity = {"attack": "bim", "steps": 10}
    if sanity is not None and sanity is not False:
        if c.typed(sanity, dict, path + ("sanity",), "a mapping {attack, steps, toolkit} or false"):
            for key in sanity:
                if key not in ("attack", "steps", "toolkit"):
                    c.add(path + ("sanity", key), "unknown field; sanity has attack, steps, toolkit")
            tk = sanity.get("toolkit", toolkit)
            if (str(sanity.get("attack", "bim")).lower(), tk) not in recipes:
                c.add(path + ("sanity", "attack"), f"no attack recipe {sanity.get('attack')!r} for toolkit {tk!r}")
    else:
        sanity = None
    attack_kwargs = _attack_kwargs(exp.get("attack_kwargs"), path + ("attack_kwargs",), c, exp.get("name"), toolkit,
                                   _experiment_attacks(attacks, exp, sanity, toolkit))
    if isinstance(transfer, dict) and isinstance(transfer.get("attack_kwargs"), dict):
        tk = transfer.get("toolkit", toolkit)
        named = transfer.get("attack", "fgsm")
        named = list(named.values()) if isinstance(named, dict) else [named]
        transfer["attack_kwargs"] = _attack_kwargs(transfer["attack_kwargs"], path + ("transfer", "attack_kwargs"), c, exp.get("name"),
                                                   tk, {str(a).lower(): tk for a in named})
    if len(c.problems) > before:
        return None
    fields = {k: v for k, v in exp.items() if k in _EXPERIMENT_FIELDS and v is not None}
    fields.update(model=model, data=data, sanity=sanity, attacks=attacks, transfer=transfer, attack_kwargs=attack_kwargs)
    fields["eps_255"] = [float(e) for e in fields.get("eps_255", [])]
    fields["eps"] = [float(e) for e in fields.get("eps", [])]
    return ExperimentSpec(**fields)


def _preset_tables() -> list[str]:
    from .tables import PRESET_TABLES

    return sorted(PRESET_TABLES)


def _data_option_problems(data: dict[str, Any], dpath: tuple, c: _Checker) -> None:
    """The data keys against the dataset factory's signature: a misspelled key (``sise: 8``) is refused
    with the others before any experiment runs, not when its experiment starts."""
    import inspect

    from ..data import DATASETS

    if data["name"] == "rgbt-frames":
        params, required = {"paths", "size"}, {"paths"}
    else:
        try:
            sig = inspect.signature(DATASETS.get(data["name"]))
        except (TypeError, ValueError):
            return  # a factory without a readable signature: create_dataset reports its options
        kinds = {p.kind for p in sig.parameters.values()}
        if inspect.Parameter.VAR_KEYWORD in kinds:
            return
        named = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        params = {p.name for p in named}
        required = {p.name for p in named if p.default is p.empty}
    for key in data:
        if key != "name" and key not in params:
            c.add(dpath + (key,), f"dataset '{data['name']}' takes no option {key!r}; its options: {sorted(params)}")
    for key in sorted(required - set(data)):
        c.add(dpath, f"dataset '{data['name']}' needs the option '{key}'")


def _experiment_attacks(attacks: list[str], exp: dict[str, Any], sanity: dict[str, Any] | None, toolkit: str) -> dict[str, str | None]:
    """Every attack name the experiment runs (lower case) -> its toolkit (None: a text attack): what
    ``attack_kwargs`` may name."""
    names: dict[str, str | None] = {a: toolkit for a in attacks}
    for combo in exp.get("combos") or []:
        for step in (combo.get("steps") or []) if isinstance(combo, dict) else []:
            if isinstance(step, dict) and step.get("kind") in ("attack", "text-attack") and isinstance(step.get("name"), str):
                names.setdefault(step["name"].lower(), step.get("toolkit", toolkit) if step["kind"] == "attack" else None)
    if sanity:
        names.setdefault(str(sanity.get("attack", "bim")).lower(), sanity.get("toolkit", toolkit))
    transfer = exp.get("transfer")
    if isinstance(transfer, dict) and not transfer.get("attack_kwargs"):  # its own attack_kwargs, else the experiment's
        named = transfer.get("attack", "fgsm")
        for a in (named.values() if isinstance(named, dict) else [named]):
            names.setdefault(str(a).lower(), transfer.get("toolkit", toolkit))
    return names


def _attack_kwargs(value: Any, path: tuple, c: _Checker, experiment: Any, toolkit: str, attacks: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """``attack_kwargs`` with lower-case keys (as ``attacks`` are), each naming an attack the experiment
    runs, none setting what the harness sets itself (eps, steps, the step): a key that matches nothing
    was silently dropped, a clashing one crashed mid-run."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, kwargs in value.items():
        name = str(key).lower()
        if name in out:
            c.add(path + (key,), f"'{name}' is given twice (names are not case-sensitive)")
            continue
        if name not in attacks:
            c.add(path + (key,), f"experiment '{experiment}' runs no attack {key!r}; its attacks: {sorted(attacks) or 'none'}")
            continue
        if not c.typed(kwargs, dict, path + (key,), "a mapping of the attack's options, e.g. {step_size: 0.01}"):
            continue
        if attacks[name] is not None:
            reserved, accepted = attack_parameters(name, attacks[name])
            for option in kwargs:
                if option in reserved:
                    hint = "; give step_size (in the modalities' units) for the step" if option in ("alpha", "eps_step") else ""
                    c.add(path + (key, option), f"experiment '{experiment}': the harness sets {name}'s {option!r} itself (from eps_255 / eps, "
                          f"steps){hint}")
                elif accepted is not None and option not in accepted:
                    c.add(path + (key, option), f"experiment '{experiment}': {name} ({attacks[name]}) takes no option {option!r}; "
                          f"it takes {sorted(accepted)}")
        out[name] = dict(kwargs)
    return out


def attack_parameters(name: str, toolkit: str) -> tuple[frozenset[str], frozenset[str] | None]:
    """What ``make_attack(name, ..., **kwargs)`` may not be given (set by the harness or the recipe) and
    what it accepts (None: unknown): the recipe's declaration (:func:`~mmfusion_attacks.recipes.recipe_options`;
    imports the toolkit, only for attacks given kwargs)."""
    from ..recipes import recipe_options

    try:
        return recipe_options(name, toolkit)
    except KeyError:
        return frozenset(), None  # no such recipe: reported with the attacks


def _model_entry(value: Any, mpath: tuple, c: _Checker, base: Path | None = None) -> dict[str, Any]:
    """A model entry checked (name, source and the source's fields, ``wrap``); returns a copy."""
    from ..models import MODELS

    model = dict(value)
    source = model.get("source", "registry")
    if not isinstance(model.get("name"), str):
        c.add(mpath + ("name",), "missing: a registered model name (e.g. mfnet)")
    elif source != "callable" and model["name"] not in MODELS:
        c.add(mpath + ("name",), f"unknown model {model['name']!r}; registered: {', '.join(MODELS.names())}")
    if source not in MODEL_SOURCES:
        c.add(mpath + ("source",), f"unknown model source {source!r}; choose from {sorted(MODEL_SOURCES)}")
    else:
        allowed = MODEL_SOURCES[source]
        for key, val in model.items():
            if key in ("name", "source"):
                continue
            if key == "wrap":
                _wrap_problems(val, mpath + ("wrap",), c)
            elif key not in allowed:
                c.add(mpath + (key,), f"not a field of model source '{source}' (it has {sorted([*allowed, 'wrap'])})")
            else:
                c.typed(val, allowed[key], mpath + (key,))
        if source == "callable" and not re.fullmatch(r"[\w.]+:[\w.]+", str(model.get("factory", ""))):
            c.add(mpath + ("factory",), "give 'package.module:function' (a function returning a FusionModel)")
        for m, d in (model.get("defences") or {}).items() if isinstance(model.get("defences"), dict) else ():
            if not isinstance(d, dict) or len(d) != 1 or next(iter(d)) not in DEFENCES:
                c.add(mpath + ("defences", m), f"one of {sorted(DEFENCES)} with its value, e.g. {{median: 3}}, got {d!r}")
            elif not c.typed(next(iter(d.values())), DEFENCES[next(iter(d))], mpath + ("defences", m, next(iter(d)))):
                pass
    if isinstance(model.get("weights"), str):
        p = Path(model["weights"]).expanduser()
        p = p if p.is_absolute() or base is None else base / p
        if not p.exists():
            c.add(mpath + ("weights",), f"no file or folder at {p}")
        model["weights"] = str(p)
    return model


def _wrap_problems(value: Any, path: tuple, c: _Checker) -> None:
    if not c.typed(value, list, path, "a list of wrappers, e.g. [{kind: at-scale, scale: 0.5, multiple: 16}]"):
        return
    for j, w in enumerate(value):
        if not c.typed(w, dict, path + (j,), "a mapping with 'kind'"):
            continue
        kind = w.get("kind")
        if kind not in WRAPPERS:
            c.add(path + (j, "kind"), f"unknown wrapper {kind!r}; choose from {sorted(WRAPPERS)}")
            continue
        if kind == "at-scale" and "scale" not in w:
            c.add(path + (j,), "missing field 'scale'")
        for key, val in w.items():
            if key == "kind":
                continue
            if key not in WRAPPERS[kind]:
                c.add(path + (j, key), f"not a field of wrapper '{kind}' (it has {sorted(WRAPPERS[kind])})")
            else:
                c.typed(val, WRAPPERS[kind][key], path + (j, key))


def _transfer_entry(value: Any, path: tuple, c: _Checker, recipes: set, toolkit: str, base: Path | None) -> dict[str, Any] | None:
    if not c.typed(value, dict, path, "a mapping {sources, targets, attack, eps_255, attacked, ...}"):
        return None
    t = dict(value)
    for key, val in t.items():
        if key not in _TRANSFER_FIELDS:
            c.add(path + (key,), f"unknown field; transfer has {sorted(_TRANSFER_FIELDS)}")
        elif val is not None:
            c.typed(val, _TRANSFER_FIELDS[key], path + (key,))
    for key in ("sources", "attacked"):
        if not t.get(key):
            c.add(path, f"missing field '{key}'")
    if t.get("eps_255") is None and t.get("eps") is None:
        c.add(path, "missing field 'eps_255' (or 'eps')")
    for key in ("eps_255", "eps"):
        if isinstance(t.get(key), (int, float)) and t[key] < 0:
            c.add(path + (key,), f"must be >= 0, got {t[key]}")
    for key in ("sources", "targets"):
        if isinstance(t.get(key), dict):
            t[key] = {str(label): _model_entry(m, path + (key, label), c, base) if c.typed(m, dict, path + (key, label)) else m
                      for label, m in t[key].items()}
    tk = t.get("toolkit", toolkit)
    attacks = t.get("attack", "fgsm")
    per_source = attacks if isinstance(attacks, dict) else {s: attacks for s in t.get("sources") or {}}
    for s, a in per_source.items():
        if isinstance(t.get("sources"), dict) and s not in t["sources"]:
            c.add(path + ("attack", s), f"no source model {s!r} (sources: {list(t['sources'])})")
        elif (str(a).lower(), tk) not in recipes:
            c.add(path + ("attack",) + ((s,) if isinstance(attacks, dict) else ()), f"no attack recipe {a!r} for toolkit {tk!r}")
    if isinstance(attacks, dict) and isinstance(t.get("sources"), dict) and set(attacks) != set(t["sources"]):
        c.add(path + ("attack",), f"give one attack per source model ({list(t['sources'])})")
    if t.get("metric", "iou_ratio") not in ("iou_ratio", "accuracy"):
        c.add(path + ("metric",), f"must be iou_ratio or accuracy, got {t.get('metric')!r}")
    if isinstance(t.get("eval_repeats"), int) and t["eval_repeats"] < 1:
        c.add(path + ("eval_repeats",), f"must be >= 1, got {t['eval_repeats']}")
    return t


_STEP_FIELDS = {"kind": str, "name": str, "attacked": list, "amount": float, "toolkit": str, "steps": int, "seed": int}
_PLAN_FIELDS = {"modality": str, "attack": str, "budget": float, "toolkit": str, "steps": int, "seed": int, "options": dict}
_CELL_FIELDS = {
    "combos": {"name": str, "steps": list},
    "joint": {"name": str, "plan": list, "orchestration": str, "rounds": int, "order": list},
    "worst_case": {"group": str, "plan": list, "orchestration": str, "rounds": int, "success_fraction": float, "skip_broken": bool},
}


def _cell_problems(kind: str, item: Any, path: tuple, c: _Checker, recipes: set) -> None:
    if not c.typed(item, dict, path):
        return
    fields = _CELL_FIELDS[kind]
    for key, val in item.items():
        if key not in fields:
            c.add(path + (key,), f"unknown field; {kind} entries have {sorted(fields)}")
        elif val is not None:
            c.typed(val, fields[key], path + (key,))
    required = ("name", "steps") if kind == "combos" else (("name", "plan") if kind == "joint" else ("group", "plan"))
    for key in required:
        if key not in item:
            c.add(path, f"missing field '{key}'")
    if item.get("orchestration", "sequential") not in ("sequential", "alternating", "gradient-joint"):
        c.add(path + ("orchestration",), f"must be sequential, alternating or gradient-joint, got {item.get('orchestration')!r}")
    entries = item.get("steps" if kind == "combos" else "plan") or []
    schema = _STEP_FIELDS if kind == "combos" else _PLAN_FIELDS
    for j, entry in enumerate(entries if isinstance(entries, list) else []):
        epath = path + ("steps" if kind == "combos" else "plan", j)
        if not c.typed(entry, dict, epath):
            continue
        for key, val in entry.items():
            if key not in schema:
                c.add(epath + (key,), f"unknown field; it has {sorted(schema)}")
            elif val is not None:
                c.typed(val, schema[key], epath + (key,))
        budget = entry.get("amount" if kind == "combos" else "budget")
        if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget < 0:
            c.add(epath + ("amount" if kind == "combos" else "budget",), f"must be >= 0, got {budget}")
        if kind == "combos":
            if entry.get("kind") not in ("attack", "text-attack", "text-augment"):
                c.add(epath + ("kind",), f"must be attack, text-attack or text-augment, got {entry.get('kind')!r}")
            elif entry["kind"] == "attack" and (str(entry.get("name", "")).lower(), entry.get("toolkit", "torchattacks")) not in recipes:
                c.add(epath + ("name",), f"no attack recipe {entry.get('name')!r} for toolkit {entry.get('toolkit', 'torchattacks')!r}")
            elif entry["kind"] == "text-augment" and entry.get("name") not in ("synonym", "deletion"):
                c.add(epath + ("name",), f"text augmentations are synonym and deletion, got {entry.get('name')!r}")
            elif entry["kind"] == "text-attack":
                from ..text.recipes import get_text_attack

                try:
                    get_text_attack(str(entry.get("name", "")))
                except KeyError as exc:
                    c.add(epath + ("name",), str(exc.args[0]))
        elif "modality" not in entry or "attack" not in entry:
            c.add(epath, "a plan entry needs 'modality' and 'attack'")


def load_spec(path: str | Path) -> RunSpec:
    """Read and check a YAML spec file (every problem in one :class:`SpecError`, with its line)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"no spec file at {path}"], str(path))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"cannot read it ({exc})"], str(path)) from None
    value, lines = _compose(text, str(path))
    return parse_spec(value, lines, source=str(path), base=path.parent)


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    defaults = ExperimentSpec(name="x", model={}, data={})
    experiments = []
    for e in spec.experiments:
        d: dict[str, Any] = {"name": e.name}
        for f in dataclasses.fields(ExperimentSpec):
            v = getattr(e, f.name)
            if f.name in ("name",) or (f.name not in ("model", "data") and v == getattr(defaults, f.name)):
                continue
            d[f.name] = v if v is not None else False
        experiments.append(d)
    top = {"name": spec.name, "seed": spec.seed, "device": spec.device, "amp": spec.amp}
    if spec.table:
        top["table"] = spec.table
    return {**top, "experiments": experiments}


def spec_to_yaml(spec: RunSpec) -> str:
    """The spec as YAML that :func:`load_spec` reads back to an equal spec (``--print-spec``)."""
    return yaml.safe_dump(_plain(spec_to_dict(spec)), sort_keys=False, default_flow_style=None, width=120)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
