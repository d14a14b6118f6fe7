"""Write predictions to a CSV: input, predicted label, probability, top-k."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["PredictionWriter"]


def _as_dict(output: Any) -> dict[str, torch.Tensor]:
    """One ``predict_step`` output as ``{"probs", ["index"]}`` (see :class:`PredictionWriter`)."""
    given = output
    if isinstance(output, torch.Tensor):
        output = {"logits": output}
    if isinstance(output, dict) and ("probs" in output or "logits" in output):
        out = {k: v for k, v in output.items() if k in ("probs", "index")}
        values = output.get("probs", output.get("logits"))
        if isinstance(values, torch.Tensor) and values.ndim == 2:
            values = values.detach().float()
            is_probs = bool((values >= 0).all()
                            and torch.allclose(values.sum(1), torch.ones(len(values)).to(values), atol=1e-3))
            out["probs"] = values if is_probs else values.softmax(dim=1)
            return out
    shape = tuple(given.shape) if isinstance(given, torch.Tensor) else None
    raise TypeError(
        f"PredictionWriter: predict_step returned {type(given).__name__}{f' of shape {shape}' if shape else ''}; "
        f"expected an (N, C) tensor of probabilities or logits, or a dict with 'probs' (or 'logits') of shape "
        f"(N, C) and optionally 'index' (N,)."
    )


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step`` outputs and writes one CSV row per input.

    Accepted outputs of ``predict_step``: lightkit's ``{"probs": (N, C), "index": (N,)}``; any
    ``(N, C)`` tensor (probabilities when its rows are >= 0 and sum to 1, otherwise logits, turned
    into probabilities with a softmax); or a dict with ``"probs"`` or ``"logits"``. Anything else
    stops with a ``TypeError`` that says what was returned and what is expected.

    Columns: ``input`` (the data module's ``predict_items[index]``, or the index), ``label``,
    ``probability``, then ``top{k}_label`` / ``top{k}_probability`` for k = 2..top_k. Under DDP each
    rank writes ``<stem>.rank<r>.csv`` (Lightning's distributed sampler splits the inputs).

    Args:
        output: CSV path; relative paths are placed in the trainer's log dir.
        top_k: how many ranked labels per row.
    """

    def __init__(self, output: str = "predictions.csv", top_k: int = 3) -> None:
        super().__init__(write_interval="epoch")
        if top_k < 1:
            raise ValueError(f"PredictionWriter: top_k={top_k} must be >= 1.")
        self.output = output
        self.top_k = top_k
        self.path: Path | None = None

    def _resolve(self, trainer: Trainer) -> Path:
        path = Path(self.output)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        batches = [_as_dict(b) for b in batches]
        probs = torch.cat([b["probs"] for b in batches]).float().cpu()
        index = torch.cat([b["index"] for b in batches]).cpu() if "index" in batches[0] else torch.arange(len(probs))
        items = getattr(trainer.datamodule, "predict_items", None) if trainer.datamodule is not None else None
        names = pl_module.hparams.get("class_names") or [str(i) for i in range(probs.shape[1])]
        k = min(self.top_k, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        self.path = self._resolve(trainer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = ["input", "label", "probability"]
        for r in range(2, k + 1):
            header += [f"top{r}_label", f"top{r}_probability"]
        with self.path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for row in range(len(probs)):
                i = int(index[row])
                line: list[Any] = [items[i] if items is not None else i]
                for r in range(k):
                    line += [names[int(top_i[row, r])], f"{float(top_p[row, r]):.6f}"]
                writer.writerow(line)
        rank_zero_info(f"lightkit: wrote {len(probs)} predictions to {self.path}")
