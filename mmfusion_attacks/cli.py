"""Command line: ``mmfusion-attacks run [SPEC.yaml]`` (a grid spec; with none, the default study on the
embedded SYNTHETIC defaults), ``mmfusion-attacks report RESULTS_DIR`` (the reports again, from the stored
results), ``mmfusion-attacks rgbt`` (the RGB-T benchmark), ``mmfusion-attacks defences`` (the
defences benchmark), ``mmfusion-attacks vl`` (the image+text benchmark), ``mmfusion-attacks joint`` (joint
attacks and the worst case over modality subsets), ``mmfusion-attacks contrastive`` (the CLIP-like study), ``mmfusion-attacks demo`` and ``mmfusion-attacks text-resources`` (the offline nltk
data TextAttack needs) (also ``python -m mmfusion_attacks ...``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .harness.options import count, number


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmfusion-attacks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attack RGB / IR / both of a small RGB-T segmenter on SYNTHETIC scenes")
    demo.add_argument("--toolkit", choices=["torchattacks", "art"], default="torchattacks")
    demo.add_argument("--attacks", nargs="+", default=["fgsm", "pgd"])
    demo.add_argument("--eps", nargs="+", type=number(0, 255, unit="on the 0-255 scale"), default=[4, 8, 16],
                      help="Linf budgets on the 0-255 scale")
    demo.add_argument("--steps", type=count(1), default=10, help="PGD iterations")
    demo.add_argument("--n-eval", type=count(1), default=32, help="number of synthetic test scenes")
    demo.add_argument("--batch-size", type=count(1), default=16)
    demo.add_argument("--train-steps", type=count(1), default=300)
    demo.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    demo.add_argument("--seed", type=count(0, 2**32 - 1), default=0)
    demo.add_argument("--out", default=None, help="folder for demo.json and demo.txt")
    text_res = sub.add_parser(
        "text-resources",
        help="prepare and list the offline nltk data TextAttack needs (stopwords, WordNet); exit 1 if any is missing",
    )
    text_res.add_argument(
        "--download",
        action="store_true",
        help="allow fetching: apt-get download of Debian's WordNet, nltk.download on a machine with internet",
    )
    text_res.add_argument("--dir", default=None, help="nltk data directory (default: <cache dir>/nltk_data)")
    run = sub.add_parser("run", help="run (or resume) a YAML grid spec into a results folder; with no spec, the default study")
    run.add_argument("spec", nargs="?", default=None, help="a YAML spec (default: the packaged default study, SYNTHETIC data)")
    run.add_argument("--out", default=None, help="results folder (default: runs/<spec file name>); re-running resumes it")
    run.add_argument("--device", default=None, help="override the spec's device (cpu, cuda, cuda:N, mps, auto)")
    run.add_argument("--only", nargs="+", default=None, help="run only these experiments (the reports keep the others' earlier results while the spec still describes them as then)")
    run.add_argument("--print-spec", action="store_true", help="print the (checked) spec as YAML and exit")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    rep = sub.add_parser("report", help="regenerate report.md / report.html / results.csv / results.json from a results folder")
    rep.add_argument("results", help="a results folder written by `mmfusion-attacks run`")
    sub.add_parser("rgbt", help="the RGB-T segmentation benchmark (options: mmfusion-attacks rgbt --help)", add_help=False)
    sub.add_parser("defences", help="adversarial training and defences per modality (options: --help)", add_help=False)
    sub.add_parser("vl", help="the image+text (chest X-ray + report) robustness benchmark (options: --help)", add_help=False)
    sub.add_parser("joint", help="joint attacks and the worst case over modality subsets (options: --help)", add_help=False)
    sub.add_parser("contrastive", help="the CLIP-like zero-shot model under white/grey/black-box attacks (options: --help)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rgbt"]:
        from .harness.rgbt import main as rgbt_main

        rgbt_main(argv[1:], prog="mmfusion-attacks rgbt")
        return 0
    if argv[:1] == ["vl"]:
        from .harness.vl import main as vl_main

        vl_main(argv[1:], prog="mmfusion-attacks vl")
        return 0
    if argv[:1] == ["joint"]:
        from .harness.joint import main as joint_main

        joint_main(argv[1:], prog="mmfusion-attacks joint")
        return 0
    if argv[:1] == ["contrastive"]:
        from .harness.contrastive import main as contrastive_main

        contrastive_main(argv[1:], prog="mmfusion-attacks contrastive")
        return 0
    if argv[:1] == ["defences"]:
        from .harness.defences import main as defences_main

        defences_main(argv[1:], prog="mmfusion-attacks defences")
        return 0
    args = parser.parse_args(argv)

    if args.command == "run":
        return _run(args, run)
    if args.command == "report":
        return _report(args, rep)
    if args.command == "text-resources":
        from .text.resources import GET_RESOURCES_HINT, prepare_text_resources

        res = prepare_text_resources(download=args.download, data_dir=args.dir)
        print(res)
        if not res.ok:
            print(f"missing: {', '.join(res.missing())}. To get them: {GET_RESOURCES_HINT}", file=sys.stderr)
            return 1
        return 0
    if args.command == "demo":
        from .demo import format_table, run_demo, save
        from .harness.options import device_problem, duplicates, out_dir_problem
        from .recipes import list_recipes

        recipes = set(list_recipes())
        problems = [f"argument --attacks: no attack recipe {a!r} for toolkit {args.toolkit!r}" for a in args.attacks
                    if (a.lower(), args.toolkit) not in recipes]
        problems += [m for m in (
            duplicates(args.attacks, "--attacks", key=str.lower, what="attack"),
            duplicates(args.eps, "--eps", key=lambda e: f"{e:g}/255", what="budget"),
            device_problem(args.device, allow_auto=True),
            out_dir_problem(args.out) if args.out else None,
        ) if m]
        if problems:  # before the model trains
            demo.error("; ".join(problems))

        result = run_demo(
            toolkit=args.toolkit,
            attacks=args.attacks,
            eps_255=args.eps,
            pgd_steps=args.steps,
            n_eval=args.n_eval,
            batch_size=args.batch_size,
            train_steps=args.train_steps,
            device=_device(args.device),
            seed=args.seed,
        )
        print(format_table(result))
        if args.out:
            print(f"wrote {save(result, args.out)}/demo.json")
    return 0


def default_spec_path():
    """The packaged default study (every family on the embedded SYNTHETIC defaults)."""
    from pathlib import Path

    return Path(__file__).parent / "specs" / "default.yaml"


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from .harness.engine import ChangedModelError, run_spec
    from .harness.spec import SpecError, load_spec, spec_to_yaml
    from .harness.tables import console_text

    path = Path(args.spec) if args.spec else default_spec_path()
    try:
        spec = load_spec(path)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.device:
        from .harness.options import device_problem

        problem = device_problem(args.device, allow_auto=True)
        if problem:
            parser.error(problem)
        spec.device = args.device
    unknown = [n for n in args.only or () if n not in {e.name for e in spec.experiments}]
    if unknown:
        parser.error(f"argument --only: no experiment {unknown} in {path} (it has {[e.name for e in spec.experiments]})")
    if args.print_spec:
        print(spec_to_yaml(spec), end="")
        return 0
    out = Path(args.out) if args.out else Path("runs") / path.stem
    try:
        summary = run_spec(spec, out, progress=not args.quiet, only=args.only)
    except (SpecError, ChangedModelError) as exc:  # refused before the experiment's work (e.g. include_classes past the model's classes)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary is None:  # a rank other than 0 of a distributed run
        return 0
    print(console_text(summary, out))
    return 0


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json
    from pathlib import Path

    from .harness.html_report import write_reports

    summary_path = Path(args.results) / "summary.json"
    if not summary_path.is_file():
        parser.error(f"argument results: no summary.json in {args.results} (a folder written by `mmfusion-attacks run`)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"argument results: {summary_path} cannot be read ({exc}); run the spec again (finished cells are reused)")
    paths = write_reports(summary, Path(args.results))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
