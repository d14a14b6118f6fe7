"""Overhead of the monitoring callbacks at their default intervals (issue 9 evidence; goal <= 3 %).

The same short fit (timm ``test_resnet``, digits at 32 px, AdamW, fixed number of optimizer steps, no
validation, no logger) with and without ``ActivationMonitor`` + ``GradientMonitor`` + ``LossCurves`` +
``Diagnose``, all at their defaults. Runs alternate (plain, monitored, then monitored, plain on the
next repetition) so that load drift on a shared machine hits both arms equally. Two figures per run:

- ``loop``: seconds from the first training batch to the end of the last one (the per-step cost the
  <= 3 % goal is about: hooks on logging steps, host syncs);
- ``fit``: the whole ``trainer.fit`` call, which adds the end-of-fit PNGs (matplotlib) once per run.

    python benchmarks/monitor_overhead.py                    # 200 steps, batch 16, 1 thread, 3 repetitions
    python benchmarks/monitor_overhead.py --steps 500 --reps 5 --model resnet10t
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightkit.callbacks.activations import ActivationMonitor
from lightkit.callbacks.curves import LossCurves
from lightkit.callbacks.diagnose import Diagnose
from lightkit.callbacks.gradients import GradientMonitor
from lightkit.data import DigitsDataModule
from lightkit.models.classifier import ImageClassifier


class LoopTimer(Callback):
    """Wall time from the start of the first training batch to the end of the last one, and the start
    time of every batch (a step's duration runs to the next step's start: every hook is inside it)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.t1 = 0.0

    @property
    def t0(self) -> float | None:
        return self.starts[0] if self.starts else None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.t1 = time.perf_counter()

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, [*self.starts[1:], self.t1], strict=True)]


_AFTER_LOOP = {"on_train_end", "on_fit_end", "on_save_checkpoint"}


def time_hooks(callback: Callback, timer: LoopTimer, spent: dict[int, float]) -> None:
    """Wrap every Lightning hook ``callback``'s class defines so that the seconds it takes are added to
    ``spent[step]`` (step = index of the batch running). Lightning looks hooks up on the instance, so
    instance attributes take over. End-of-fit hooks are left out: they are timed by ``fit - loop``."""
    names = {n for cls in type(callback).__mro__ if cls not in (Callback, object) for n in vars(cls)
             if n.startswith("on_") and n not in _AFTER_LOOP and callable(getattr(Callback, n, None))}
    for name in names:
        hook = getattr(callback, name)

        def timed(*args: Any, _hook: Any = hook, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                step = len(timer.starts) - 1
                spent[step] = spent.get(step, 0.0) + time.perf_counter() - t0

        setattr(callback, name, timed)


def in_run_overhead(durations: list[float], spent: dict[int, float], every: int) -> float:
    """Seconds the monitors added to one monitored loop, from that loop alone (no second arm, so load
    drift between runs does not enter): the hook time of ordinary steps, plus, on the steps a monitor
    logs (every ``every`` steps; the forward hooks recording activations run inside those), what the
    step took beyond an ordinary step's un-hooked time. Step 0 (slow in any fit) is left out."""
    logging = {i for i in range(1, len(durations)) if i % every in (0, every - 1)}
    ordinary = [i for i in range(1, len(durations)) if i not in logging]
    base = statistics.median(durations[i] - spent.get(i, 0.0) for i in ordinary)
    return sum(spent.get(i, 0.0) for i in ordinary) + sum(max(0.0, durations[i] - base) for i in logging)


def one_fit(model_name: str, steps: int, batch_size: int, monitored: bool) -> tuple[float, float, float]:
    """``(loop seconds, fit seconds, in-run overhead seconds)`` of one fit from the same seed."""
    torch.manual_seed(0)
    model = ImageClassifier(encoder=model_name, num_classes=10, in_chans=1,
                            optimizer=partial(torch.optim.AdamW, lr=1e-3))
    data = DigitsDataModule(batch_size=batch_size, image_size=32)
    timer = LoopTimer()
    callbacks: list[Callback] = [timer]
    spent: dict[int, float] = {}
    if monitored:
        monitors = [ActivationMonitor(), GradientMonitor(), LossCurves(), Diagnose()]
        for monitor in monitors:
            time_hooks(monitor, timer, spent)
        callbacks += monitors
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, default_root_dir=root,
                          callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=data)
        fit = time.perf_counter() - t0
    assert timer.t0 is not None
    loop = timer.t1 - timer.t0
    overhead = in_run_overhead(timer.durations(), spent, every=50) if monitored else 0.0
    return loop, fit, overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="1: on a shared, loaded CPU more threads oversubscribe it.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    one_fit(args.model, 5, args.batch_size, True)  # warm-up: imports (matplotlib), allocator, data cache
    times: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for rep in range(args.reps):
        for monitored in ((False, True) if rep % 2 == 0 else (True, False)):
            times[monitored].append(one_fit(args.model, args.steps, args.batch_size, monitored))
            loop, fit, extra = times[monitored][-1]
            inside = (f"  monitors inside the loop {extra:.2f} s ({100 * extra / (loop - extra):.1f} %)"
                      if monitored else "")
            print(f"rep {rep} {'monitored' if monitored else 'plain    '}: loop {loop:.2f} s  fit {fit:.2f} s{inside}",
                  flush=True)
    print(f"\n{args.model}, {args.steps} steps, batch {args.batch_size}, 32 px, {args.reps} reps, "
          f"{args.threads} threads, torch {torch.__version__}")
    for i, label in enumerate(("loop", "fit")):
        plain = statistics.median(t[i] for t in times[False])
        monitored = statistics.median(t[i] for t in times[True])
        print(f"{label:>4}: plain {plain:.2f} s  monitored {monitored:.2f} s  ratio {monitored / plain:.3f} "
              f"({100 * (monitored / plain - 1):+.1f} %)")
    paired = [m[0] / p[0] for p, m in zip(times[False], times[True], strict=True)]
    print(f"loop ratio of the runs side by side in each repetition: median {statistics.median(paired):.3f} "
          f"(range {min(paired):.3f}-{max(paired):.3f})")
    inside = statistics.median(extra / (loop - extra) for loop, _, extra in times[True])
    print(f"in-run accounting (monitored loops alone: hook time + logging-step excess): median +{100 * inside:.2f} %")
    # what fit adds to the loop in each arm; the difference is the end-of-fit PNGs, once per fit
    after = {m: statistics.median(fit - loop for loop, fit, _ in times[m]) for m in (False, True)}
    print(f"after the loop: plain {after[False]:.2f} s  monitored {after[True]:.2f} s  "
          f"(end-of-fit PNGs: {after[True] - after[False]:.2f} s once per fit)")


if __name__ == "__main__":
    main()
