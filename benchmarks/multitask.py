"""Few-shot digits: the main task alone vs with auxiliary tasks (equal weights, uncertainty, DWA).

Same data (``DigitsMultiTaskDataModule``: every image rotated by a known random angle, train angles fresh
each step), model (resnet10t from the MNIST-5k encoder, 32 px), optimizer (AdamW 1e-3, lightkit one-cycle)
and step budget in every arm; only the tasks and their weighting differ. The auxiliary tasks are parity,
digit >= 5 and the rotation angle (regression, in units of max_rotation). The uncertainty arm's
log-variances get their own LR (--uncertainty-lr), or they barely move in 80 steps. Arms are interleaved
per seed so machine load hits all alike. Prints each run's main-task test accuracy, the learned sigmas /
final DWA weights and the auxiliary test metrics, then mean +- std per arm.

    python benchmarks/multitask.py                                  # 3 seeds, 10 labels per class
    python benchmarks/multitask.py --seeds 0 --arms main_only uncertainty --epochs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lightkit.data.multitask import DigitsMultiTaskDataModule  # noqa: E402
from lightkit.lr_schedulers import OneCycle  # noqa: E402
from lightkit.models.multitask import MultiTaskClassifier  # noqa: E402

WEIGHTS = str(Path(__file__).resolve().parents[1] / "lightkit/assets/mnist5k_resnet10t.safetensors")
MAIN = {"name": "digit", "type": "multiclass", "main": True}
AUX = [{"name": "parity", "type": "binary"}, {"name": "ge5", "type": "binary"},
       {"name": "angle", "type": "regression", "loss": "mse", "metrics": ["mae"]}]
# arm -> (tasks, weighting)
ARMS = {
    "main_only": ([MAIN], "fixed"),
    "equal": ([MAIN, *AUX], "fixed"),
    "uncertainty": ([MAIN, *AUX], "uncertainty"),
    "dwa": ([MAIN, *AUX], "dwa"),
}


def run(arm: str, seed: int, args: argparse.Namespace) -> dict:
    tasks, weighting = ARMS[arm]
    seed_everything(seed, verbose=False)
    dm = DigitsMultiTaskDataModule(batch_size=args.batch_size, image_size=32, seed=seed,
                                   samples_per_class=args.samples_per_class, max_rotation=args.max_rotation)
    model = MultiTaskClassifier(
        tasks=tasks, encoder="resnet10t", num_classes=10, in_chans=1,
        pretrained=WEIGHTS if args.pretrained else False, weighting=weighting,
        uncertainty_lr=args.uncertainty_lr if weighting == "uncertainty" else None,
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.05),
        # lightkit's OneCycle scales each group's own LR (torch's OneCycleLR would overwrite uncertainty_lr).
        lr_scheduler=partial(OneCycle, pct_start=0.25),
    )
    trainer = Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - t0
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    result = {"acc": float(out["test/acc"]), "seconds": seconds, "steps": trainer.global_step}
    if weighting == "uncertainty":
        result["sigma"] = {t["name"]: float(s)
                           for t, s in zip(tasks, torch.exp(0.5 * model.log_vars.detach()), strict=True)}
    if weighting == "dwa":
        result["weights"] = {t["name"]: float(w) for t, w in zip(tasks, model.task_weights(), strict=True)}
    if len(tasks) > 1:
        result["aux"] = {k.split("/")[1] + ("_acc" if k.endswith("acc") else "_mae"): float(v) for k, v in out.items()
                         if k.startswith("task/") and k.endswith(("test_acc", "test_mae")) and "/digit/" not in k}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--uncertainty-lr", type=float, default=0.05,
                        help="LR of the log-variances (uncertainty arm); the encoder and heads use --lr.")
    parser.add_argument("--max-rotation", type=float, default=30.0)
    parser.add_argument("--scratch", dest="pretrained", action="store_false", help="Random encoder init.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}; {vars(args)}", flush=True)
    results: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for arm in args.arms:
            r = run(arm, seed, args)
            results[arm].append(r)
            extra = "".join(f" {k}={v}" for k, v in r.items() if k in ("sigma", "weights", "aux"))
            print(f"seed {seed} {arm:<12} acc {r['acc']:.4f}  {r['steps']} steps  {r['seconds']:.0f} s{extra}",
                  flush=True)
    print(f"\nload average after: {os.getloadavg()}; total {time.perf_counter() - t0:.0f} s")
    print("| arm | main-task test acc (mean +- std) | runs | learned sigma / DWA weight (mean) |")
    print("|---|---|---:|---|")
    for arm, rs in results.items():
        accs = [r["acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        key = "sigma" if "sigma" in rs[0] else "weights" if "weights" in rs[0] else None
        learned = ", ".join(f"{name} {statistics.mean(r[key][name] for r in rs):.3f}"
                            for name in rs[0][key]) if key else ""
        print(f"| {arm} | {100 * statistics.mean(accs):.2f} +- {100 * std:.2f} % | {len(rs)} | {learned} |")


if __name__ == "__main__":
    main()
