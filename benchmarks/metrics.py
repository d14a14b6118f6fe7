"""One metric path (issue 18, item 4): torchmetrics with ``validate_args=False`` vs the lean metric, per step.

``ImageClassifier`` updates accuracy, macro F1 and top-5 accuracy every training step. Two ways, side
by side on the same logits and targets, runs alternating:

- ``lean``: the hand-written ``LeanClassificationMetric`` that ``ImageClassifier`` used until this
  benchmark (one or two tensor ops per update; kept here, below, as the reference);
- ``torchmetrics``: ``MulticlassAccuracy`` (micro), ``MulticlassF1Score`` (macro) and
  ``MulticlassAccuracy(top_k=5)`` (micro), all with ``validate_args=False``.

Both as a ``MetricCollection(compute_groups=False)``, as the models build them. The figure that decides
is the difference per step as a share of a training step of the quickstart model (``resnet10t``, 32 px,
batch 64, forward + backward + AdamW step, no metrics), measured in the same process: under 1 %, the
torchmetrics classes serve both models; above, the lean one does. The values of both paths are checked
equal first. The outcome (0.04 % on a loaded 2-core box): lightkit now uses torchmetrics in both modules.
Prints ``uptime``'s load average: wall-clock figures mean something only on an idle box.

    python benchmarks/metrics.py                  # 10 classes (digits), batch 64, 400 updates x 7 repetitions
    python benchmarks/metrics.py --classes 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from torchmetrics import Metric, MetricCollection  # noqa: E402
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score  # noqa: E402


class LeanClassificationMetric(Metric):
    """The hand-written metric lightkit used before (``lightkit/models/metrics.py`` at commit 01feff6)."""

    full_state_update = False

    def __init__(self, num_classes: int, figure: str = "acc") -> None:
        super().__init__()
        self.num_classes, self.figure = num_classes, figure
        if figure == "f1":
            self.add_state(
                "confusion", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
            )
        else:
            self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        target = target.long()
        if self.figure == "f1":
            c = self.num_classes
            self.confusion += torch.bincount(target * c + logits.argmax(dim=1), minlength=c * c).view(c, c)
            return
        if self.figure == "acc":
            hit = logits.argmax(dim=1) == target
        else:
            hit = (logits.topk(5, dim=1).indices == target.view(-1, 1)).any(dim=1)
        self.correct += hit.sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        if self.figure == "f1":
            tp = self.confusion.diagonal().double()
            denom = self.confusion.sum(0).double() + self.confusion.sum(1).double()
            present = (denom > 0).double()
            return ((2 * tp / denom.clamp_min(1) * present).sum() / present.sum().clamp_min(1)).float()
        return (self.correct / self.total.clamp_min(1)).float()


def lean(num_classes: int) -> MetricCollection:
    return MetricCollection({f: LeanClassificationMetric(num_classes, f) for f in ("acc", "f1", "acc_top5")},
                            compute_groups=False)


def torchmetrics_path(num_classes: int) -> MetricCollection:
    common = {"num_classes": num_classes, "validate_args": False}
    return MetricCollection({"acc": MulticlassAccuracy(average="micro", **common),
                             "f1": MulticlassF1Score(average="macro", **common),
                             "acc_top5": MulticlassAccuracy(average="micro", top_k=5, **common)},
                            compute_groups=False)


def batches(n: int, batch: int, num_classes: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, num_classes, generator=g).to(device),
             torch.randint(0, num_classes, (batch,), generator=g).to(device)) for _ in range(n)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def per_update_ms(
    metrics: MetricCollection, data: list[tuple[torch.Tensor, torch.Tensor]], device: str
) -> float:
    metrics.reset()
    _sync(device)
    t0 = time.perf_counter()
    for logits, target in data:
        metrics.update(logits, target)
    _sync(device)  # the queued kernels count too
    return (time.perf_counter() - t0) / len(data) * 1e3


def train_step_ms(steps: int, batch: int, device: str) -> float:
    """One optimizer step of the quickstart model, without metrics (the denominator)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    times = []
    for i in range(steps + 3):
        _sync(device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        if i >= 3:  # warm-up: allocator, first-call dispatch
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (kernels synchronized at the end of each timing)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"load average before: {os.getloadavg()[0]:.2f} (uptime 1 min); torch threads {args.threads}")

    data = batches(args.updates, args.batch, args.classes, args.device)
    paths = {"lean": lean(args.classes).to(args.device),
             "torchmetrics": torchmetrics_path(args.classes).to(args.device)}
    for metrics in paths.values():
        metrics.reset()
        for logits, target in data:
            metrics.update(logits, target)
    values = {name: {k: float(v) for k, v in m.compute().items()} for name, m in paths.items()}
    for key in values["lean"]:
        assert abs(values["lean"][key] - values["torchmetrics"][key]) < 1e-6, (key, values)
    print(f"values agree over {args.updates} batches: {values['lean']}")

    per_path: dict[str, list[float]] = {name: [] for name in paths}
    per_update_ms(paths["lean"], data[:50], args.device)  # warm-up both
    per_update_ms(paths["torchmetrics"], data[:50], args.device)
    for _ in range(args.reps):  # alternate, so drift of the box hits both alike
        for name, metrics in paths.items():
            per_path[name].append(per_update_ms(metrics, data, args.device))
    step = train_step_ms(args.train_steps, args.batch, args.device)
    med = {name: statistics.median(v) for name, v in per_path.items()}
    diff = med["torchmetrics"] - med["lean"]
    print(f"\nper training step on {args.device}, {args.classes} classes, batch {args.batch} "
          f"(median of {args.reps} x {args.updates} updates):")
    for name in paths:
        print(f"  {name:12s} {med[name]:7.3f} ms   (runs: {', '.join(f'{v:.3f}' for v in per_path[name])})")
    print(f"  difference   {diff:7.3f} ms")
    print(f"training step (resnet10t, 32 px, batch {args.batch}, AdamW, no metrics, {args.device}): "
          f"{step:.2f} ms")
    share = 100 * diff / step
    verdict = "torchmetrics everywhere" if share < 1.0 else "the lean metric in both modules"
    print(f"difference = {share:.2f} % of a training step -> {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
