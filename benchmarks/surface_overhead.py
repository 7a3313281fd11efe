"""What does attacking through the surface cost? Ratios against a hand-written PGD loop, one run.

    python benchmarks/surface_overhead.py [--device cuda] [--batch 8] [--steps 10]

All methods run 10-step Linf PGD (no random start) on the thermal modality of the demo segmenter
and must produce the same adversarial (max difference printed). Ratios > 1 are slower.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchattacks
from art.attacks.evasion import ProjectedGradientDescent
from mmfusion_attacks.adapters.art import to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import run_attack
from mmfusion_attacks.models import create_model


def timed(fn, repeats: int):
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    fusion = create_model("tiny-rgbt-segmenter", num_classes=9).to(dev).eval()
    for p in fusion.parameters():
        p.requires_grad_(False)
    h, w = args.size
    batch = {"rgb": torch.rand(args.batch, 3, h, w, device=dev), "ir": torch.rand(args.batch, 1, h, w, device=dev)}
    labels = torch.randint(0, 9, (args.batch, h, w), device=dev)
    eps, alpha = 8 / 255, 2 / 255

    def hand_written():
        x = batch["ir"].clone()
        for _ in range(args.steps):
            x.requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(fusion({"rgb": batch["rgb"], "ir": x}), labels)
            (grad,) = torch.autograd.grad(loss, x)
            x = (batch["ir"] + (x.detach() + alpha * grad.sign() - batch["ir"]).clamp(-eps, eps)).clamp(0, 1)
        return x

    surface = to_torchattacks(fusion, "ir")
    ta = torchattacks.PGD(surface, eps=eps, alpha=alpha, steps=args.steps, random_start=False)

    def torchattacks_direct():
        with surface.bound(batch) as x:
            return ta(x, labels)

    def torchattacks_runner():
        return run_attack(ta, batch, labels, check=True).inputs["ir"]

    art = ProjectedGradientDescent(to_art(fusion, "ir"), eps=eps, eps_step=alpha, max_iter=args.steps, verbose=False)

    def art_runner():
        return run_attack(art, batch, labels).inputs["ir"]

    base_t, base = timed(hand_written, args.repeats)
    print(f"device {dev}, batch {args.batch}x(3+1)x{h}x{w}, {args.steps}-step PGD on 'ir'")
    print(f"{'method':<34}{'s/batch':>10}{'ratio':>8}{'max |diff|':>12}")
    print(f"{'hand-written torch loop':<34}{base_t:>10.4f}{1.0:>8.2f}{0.0:>12.2e}")
    for name, fn in (
        ("torchattacks on surface (direct)", torchattacks_direct),
        ("torchattacks via run_attack", torchattacks_runner),
        ("ART PGD via run_attack", art_runner),
    ):
        t, out = timed(fn, args.repeats)
        print(f"{name:<34}{t:>10.4f}{t / base_t:>8.2f}{float((out - base).abs().max()):>12.2e}")


if __name__ == "__main__":
    main()
