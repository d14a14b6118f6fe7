"""Checkpoint ensembles: predict with several checkpoints, one at a time, and average their probabilities.

    result = ensemble_predict(["seed0.ckpt", "seed1.ckpt", "seed2.ckpt"], DigitsDataModule(image_size=32))
    print(result.table())          # each member and the ensemble: acc, nll, ece
    result.to_csv("ensemble.csv")

Members are independent runs (other seeds), the snapshots of
:class:`~lightkit.callbacks.snapshot.SnapshotEnsemble` (``snapshots/snapshot_{k}.pt``) or any
checkpoints of the same architecture. Each is loaded into one model through ``trainer.predict(ckpt_path=...)``
(the memory of one model, Lightning's device handling and the data module's preprocessing); the
ensemble is the mean of their softmax outputs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch import Tensor

from lightkit.functional.ensemble import average_probs, classification_metrics

__all__ = ["EnsembleResult", "ensemble_predict"]


@dataclass
class EnsembleResult:
    """What :func:`ensemble_predict` returns. Rows are ordered by ``index`` (the data module's predict index).

    Attributes:
        ckpt_paths: the members, in order.
        member_probs: ``(M, N, C)`` softmax of each member.
        probs: ``(N, C)`` ensemble probabilities, the mean over members.
        index: ``(N,)`` index of each row in the predict set (``predict_items[index]`` names it).
        target: ``(N,)`` class indices when known (the test split of a lightkit data module), else ``None``.
        member_metrics: ``acc`` / ``nll`` / ``ece`` per member (empty without targets).
        metrics: ``acc`` / ``nll`` / ``ece`` of the ensemble (empty without targets).
    """

    ckpt_paths: list[str]
    member_probs: Tensor
    probs: Tensor
    index: Tensor
    target: Tensor | None = None
    member_metrics: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: one row per member, then the ensemble."""
        if not self.metrics:
            return f"ensemble of {len(self.ckpt_paths)} checkpoints, {len(self.index)} inputs (no labels to score)"
        lines = [f"{'member':<48} {'acc':>8} {'nll':>8} {'ece':>8}"]
        for path, m in zip(self.ckpt_paths, self.member_metrics, strict=True):
            lines.append(f"{Path(path).name[-48:]:<48} {m['acc']:>8.4f} {m['nll']:>8.4f} {m['ece']:>8.4f}")
        m = self.metrics
        lines.append(f"{f'ensemble ({len(self.ckpt_paths)})':<48} {m['acc']:>8.4f} {m['nll']:>8.4f} {m['ece']:>8.4f}")
        return "\n".join(lines)

    def to_csv(self, path: str | Path, class_names: list[str] | None = None, items: list[str] | None = None) -> Path:
        """Write one row per input: ``input``, ensemble ``label`` / ``probability``, then each member's label.

        Args:
            path: the CSV file.
            class_names: names of the classes (default: indices).
            items: names of the inputs by predict index (a lightkit data module's ``predict_items``).
        """
        names = class_names or [str(i) for i in range(self.probs.shape[1])]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        top_p, top_i = self.probs.max(dim=1)
        member_top = self.member_probs.argmax(dim=2)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["input", "label", "probability"]
                            + [f"member{m}_label" for m in range(len(self.ckpt_paths))])
            for row in range(len(self.index)):
                i = int(self.index[row])
                writer.writerow([items[i] if items else i, names[int(top_i[row])], f"{float(top_p[row]):.6f}"]
                                + [names[int(member_top[m, row])] for m in range(len(self.ckpt_paths))])
        return path


def _predict(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule,
             ckpt: str) -> tuple[Tensor, Tensor]:
    batches = trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt, return_predictions=True)
    if not batches or not isinstance(batches[0], dict) or "probs" not in batches[0]:
        raise ValueError(f"ensemble_predict: {type(model).__name__}.predict_step must return a dict with 'probs' "
                         f"(and 'index'), as ImageClassifier does.")
    probs = torch.cat([b["probs"] for b in batches]).float().cpu()
    index = torch.cat([b["index"] for b in batches]).cpu() if "index" in batches[0] else torch.arange(len(probs))
    order = index.argsort()
    return probs[order], index[order]


def _test_split_targets(datamodule: LightningDataModule) -> Tensor | None:
    """Labels of the predict set when it is a lightkit data module's test split (no ``predict_path``)."""
    from lightkit.data.base import BaseImageDataModule

    if not isinstance(datamodule, BaseImageDataModule) or datamodule.predict_path is not None:
        return None
    return torch.cat([batch[1] for batch in datamodule.test_dataloader()]).cpu()


def ensemble_predict(
    ckpt_paths: list[str],
    datamodule: LightningDataModule,
    model: LightningModule | None = None,
    trainer: Trainer | None = None,
    target: Tensor | None = None,
) -> EnsembleResult:
    """Predict with each checkpoint in turn and average the probabilities; score each member and the ensemble.

    Args:
        ckpt_paths: two or more checkpoints (or snapshot files) of one architecture.
        datamodule: serves ``predict_dataloader()`` (a lightkit data module without ``predict_path``
            predicts its test split, whose labels then score the members and the ensemble).
        model: the module the weights are loaded into; default ``ImageClassifier`` built from the
            first checkpoint's hyperparameters.
        trainer: runs ``predict``; default one device, no logger. Use a single-process trainer: under
            DDP ``predict`` returns only the local rank's share.
        target: ``(N,)`` labels of the predict set by index, to score other data.

    Raises:
        ValueError: fewer than two checkpoints, a missing file, or members that disagree on the inputs.
    """
    if len(ckpt_paths) < 2:
        raise ValueError(f"ensemble_predict: got {len(ckpt_paths)} checkpoint(s); an ensemble needs two or more paths.")
    missing = [p for p in ckpt_paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"ensemble_predict: checkpoint(s) {missing} do not exist; "
                         "pass existing .ckpt / snapshot files.")
    if model is None:
        from lightkit.models.classifier import ImageClassifier

        model = ImageClassifier.load_from_checkpoint(ckpt_paths[0], map_location="cpu")
    if trainer is None:
        trainer = Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    members, index = [], None
    for path in ckpt_paths:
        probs, idx = _predict(trainer, model, datamodule, str(path))
        if index is not None and not torch.equal(idx, index):
            raise ValueError(f"ensemble_predict: {path} predicted other inputs than {ckpt_paths[0]}; the predict "
                             f"set must not change between members (no shuffling, one process).")
        members.append(probs)
        index = idx
    assert index is not None
    result = EnsembleResult([str(p) for p in ckpt_paths], torch.stack(members), average_probs(members), index)
    labels = target if target is not None else _test_split_targets(datamodule)
    if labels is not None:
        result.target = labels.cpu()[index]
        result.member_metrics = [classification_metrics(p, result.target) for p in members]
        result.metrics = classification_metrics(result.probs, result.target)
    return result
