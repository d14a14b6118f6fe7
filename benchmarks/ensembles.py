"""Ensembles and weight averaging on the embedded digits, same budget per run: accuracy, NLL and ECE on the test split.

    python benchmarks/ensembles.py --epochs 8 --seeds 0 1 2     # ~1 h on 2 busy CPU cores, resnet10t

Per seed: a single model (SGD + per-step cosine), a snapshot ensemble (the same budget in 4 cosine cycles;
its best single snapshot is chosen by *test* accuracy, the strongest baseline the ensemble can face), EMA
(same cosine run, average validated), SWA (cosine to 0.1 of the peak, average of the second half, BatchNorm
recomputed); across seeds: the ensemble of the 3 independent single models. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402

from lightkit.callbacks.ema import EMA  # noqa: E402
from lightkit.callbacks.snapshot import SnapshotEnsemble  # noqa: E402
from lightkit.callbacks.swa import SWA  # noqa: E402
from lightkit.data import DigitsDataModule  # noqa: E402
from lightkit.functional.ensemble import classification_metrics, member_probs  # noqa: E402
from lightkit.lr_schedulers import Cosine  # noqa: E402
from lightkit.models.classifier import ImageClassifier  # noqa: E402


def _fit(seed: int, epochs: int, encoder: str, root: Path, callbacks: list[Callback], final_factor: float | None):
    seed_everything(seed)
    sgd = partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = None if final_factor is None else partial(Cosine, final_factor=final_factor)
    model = ImageClassifier(encoder=encoder, num_classes=10, in_chans=1, optimizer=sgd, lr_scheduler=scheduler)
    dm = DigitsDataModule(batch_size=64, image_size=32, seed=0)  # same splits for every seed
    trainer = Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="auto", devices=1, default_root_dir=root,
                      callbacks=callbacks, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    batches = list(dm.test_dataloader())
    target = torch.cat([b[1] for b in batches])
    return model, batches, target


def _score(probs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return classification_metrics(probs.cpu(), target.cpu())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--encoder", default="resnet10t")
    parser.add_argument("--root", default="runs/bench_ensembles")
    args = parser.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    rows: dict[str, list[dict[str, float]]] = {}
    singles: list[torch.Tensor] = []
    target = None
    t0 = time.perf_counter()
    for seed in args.seeds:
        root = Path(args.root) / f"seed{seed}"
        model, batches, target = _fit(seed, args.epochs, args.encoder, root / "single", [], 0.0)
        probs = member_probs(model, [model.state_dict()], batches)[0]
        singles.append(probs)
        rows.setdefault("single model (cosine)", []).append(_score(probs, target))

        snap = SnapshotEnsemble(cycles=4, dirpath=str(root / "snapshots"))
        model, batches, target = _fit(seed, args.epochs, args.encoder, root / "snap", [snap], None)
        members = member_probs(model, snap.snapshots, batches)
        scores = [_score(p, target) for p in members]
        rows.setdefault("best single snapshot (by test acc)", []).append(
            max(scores, key=lambda s: (s["acc"], -s["nll"])))
        rows.setdefault("snapshot ensemble (M=4)", []).append(_score(members.mean(0), target))

        model, batches, target = _fit(seed, args.epochs, args.encoder, root / "ema", [EMA(decay=0.99)], 0.0)
        rows.setdefault("EMA (decay 0.99, warm-up)", []).append(
            _score(member_probs(model, [model.state_dict()], batches)[0], target))

        model, batches, target = _fit(seed, args.epochs, args.encoder, root / "swa", [SWA(start=0.5)], 0.1)
        rows.setdefault("SWA (second half, BN recomputed)", []).append(
            _score(member_probs(model, [model.state_dict()], batches)[0], target))
        done = {name: scores[-1] for name, scores in rows.items()}
        print(f"seed {seed} done after {time.perf_counter() - t0:.0f} s: {done}", flush=True)
    assert target is not None
    ensemble3 = _score(torch.stack(singles).mean(0), target) if len(singles) > 1 else None

    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs, {args.encoder} from scratch, digits 32x32, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| method | acc | NLL | ECE |\n|---|---|---|---|")
    for name, scores in rows.items():
        cells = []
        for key in ("acc", "nll", "ece"):
            values = [s[key] for s in scores]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if ensemble3:
        print(f"| ensemble of {len(singles)} independent single models | {ensemble3['acc']:.4f} | "
              f"{ensemble3['nll']:.4f} | {ensemble3['ece']:.4f} |")
    wins = [(e["acc"] >= b["acc"], e["nll"] < b["nll"]) for e, b in
            zip(rows["snapshot ensemble (M=4)"], rows["best single snapshot (by test acc)"], strict=True)]
    print(f"\nsnapshot ensemble >= best single snapshot in accuracy: {sum(w[0] for w in wins)}/{len(wins)} seeds; "
          f"lower NLL: {sum(w[1] for w in wins)}/{len(wins)} seeds")


if __name__ == "__main__":
    main()
