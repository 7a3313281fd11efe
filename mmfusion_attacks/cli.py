"""Command line: ``mmfusion-attacks rgbt`` (the RGB-T benchmark), ``mmfusion-attacks defences`` (the
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

        defences_main(argv[1:])
        return 0
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
