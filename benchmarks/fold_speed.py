"""CPU inference speed of BN-folded vs unfolded timm models (issue 11 evidence).

Both models are timed in the same process, with repetitions interleaved (unfolded, folded, then folded,
unfolded on the next repetition) so that clock or load drift hits both equally; the median per forward
is reported. BN running statistics are randomised first so that the max abs diff is a real check, not
the identity BN of a fresh model.

    python benchmarks/fold_speed.py                      # resnet18 + efficientnet_b0, batch 1 and 32, 224 px
    python benchmarks/fold_speed.py --models resnet18 --batch-sizes 1 --image-size 160
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import timm
import torch
from torch import nn

from lightkit.functional.fold import fold_batchnorm


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running stats and affine in every BN, so folding changes real numbers."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model.eval()


def time_pair(a: nn.Module, b: nn.Module, x: torch.Tensor, reps: int, warmup: int) -> tuple[float, float]:
    """Median seconds per forward of ``a`` and ``b``, timed alternately (ABBA order) on the same input."""
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (a, b)
    with torch.inference_mode():
        for _ in range(warmup):
            a(x)
            b(x)
        for rep in range(reps):
            order = (0, 1) if rep % 2 == 0 else (1, 0)
            for i in order:
                t0 = time.perf_counter()
                models[i](x)
                times[i].append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_b0"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--image-size", type=int, default=224, help="square input side in pixels")
    parser.add_argument("--reps", nargs="+", type=int, default=[30, 5], help="repetitions per batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.reps) != len(args.batch_sizes):
        parser.error(
            f"--reps has {len(args.reps)} values for {len(args.batch_sizes)} batch sizes; give one each."
        )

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, {args.image_size} px"
    )
    print("| model | batch | reps | unfolded ms | folded ms | speedup | max abs diff | BN folded / left |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    # Other processes share the CPU on dev machines; the load average says how much to trust the figures.
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    for name in args.models:
        model = randomize_bn(timm.create_model(name, pretrained=False))
        folded, report = fold_batchnorm(model)
        for bs, reps in zip(args.batch_sizes, args.reps, strict=True):
            x = torch.randn(bs, 3, args.image_size, args.image_size)
            with torch.inference_mode():
                diff = (model(x) - folded(x)).abs().max().item()
            t_ref, t_fold = time_pair(model, folded, x, reps=reps, warmup=2)
            print(
                f"| {name} | {bs} | {reps} | {t_ref * 1e3:.1f} | {t_fold * 1e3:.1f} | {t_ref / t_fold:.2f}x "
                f"| {diff:.1e} | {len(report.folded)} / {len(report.unfolded)} |",
                flush=True,
            )
    print(f"load average before: {load}; after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
