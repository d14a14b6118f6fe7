"""``MultiTaskClassifier``: one timm encoder (or one per task) shared by several task heads.

Multi-task learning (Caruana 1997; Ruder 2017, https://arxiv.org/abs/1706.05098): auxiliary tasks
trained next to the main task act as an inductive bias on the shared representation. At test time only
the main task's path (encoder + head) is needed, so prediction, ``drop_auxiliary_heads`` and the
``export`` command use the main task alone.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection, R2Score
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
)

from lightkit.functional.multitask import (
    dwa_weights,
    fixed_weighted_loss,
    soft_sharing_penalty,
    uncertainty_weighted_loss,
    uncertainty_weights,
)
from lightkit.models.classifier import build_param_groups, lr_scheduler_config
from lightkit.models.encoder import create_encoder, encoder_data_config, encoder_layer_groups
from lightkit.models.heads import Activation, ClassifierHead, HeadInit
from lightkit.models.metadata import inference_metadata
from lightkit.models.metrics import EpochMetricLogging, multiclass_metric

__all__ = ["MainTaskModel", "MultiTaskClassifier", "Task"]

TaskType = Literal["multiclass", "binary", "regression"]
LossName = Literal["cross_entropy", "bce", "mse", "l1", "smooth_l1"]
Weighting = Literal["fixed", "uncertainty", "dwa"]
Sharing = Literal["hard", "soft"]

_LOSSES: dict[str, tuple[str, ...]] = {
    "multiclass": ("cross_entropy",),
    "binary": ("bce",),
    "regression": ("mse", "l1", "smooth_l1"),
}
_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("acc", "f1", "acc_top5"),
    "binary": ("acc", "f1", "auroc"),
    "regression": ("mae", "mse", "rmse", "r2"),
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Task:
    """One task of a :class:`MultiTaskClassifier` (a YAML mapping under ``model.init_args.tasks``).

    Attributes:
        name: identifier (letters, digits, ``_``); the data module's column of the same name feeds it.
        type: ``multiclass`` (softmax over ``num_classes``), ``binary`` (one sigmoid logit, targets 0/1)
            or ``regression`` (one real output).
        num_classes: classes of a ``multiclass`` task; for the main task it defaults to the model's
            ``num_classes`` (linked from the data by the CLI). Unset for binary and regression.
        loss: ``cross_entropy`` (multiclass), ``bce`` (binary), ``mse`` / ``l1`` / ``smooth_l1``
            (regression); default the first of its type.
        weight: the task's loss weight with ``weighting: fixed``; other weightings learn or compute it.
        metrics: torchmetrics to log: multiclass ``acc``, ``f1`` (macro), ``acc_top5``; binary ``acc``,
            ``f1``, ``auroc``; regression ``mae``, ``mse``, ``rmse``, ``r2``. Default: ``acc``, ``f1``
            (+ ``acc_top5`` above 5 classes) / ``acc``, ``f1`` / ``mae``.
        main: the task served by ``predict``, ``export`` and the ``{stage}/acc`` keys; exactly one task
            is main (a single task is main by default). Must be ``multiclass``.
    """

    name: str
    type: TaskType = "multiclass"
    num_classes: int | None = None
    loss: LossName | None = None
    weight: float = 1.0
    metrics: list[str] | None = None
    main: bool = False


def _task(item: Task | dict[str, Any], index: int) -> Task:
    if isinstance(item, Task):
        return copy.deepcopy(item)
    if not isinstance(item, dict):
        raise ValueError(f"MultiTaskClassifier: tasks[{index}]={item!r} must be a mapping such as "
                         f"{{name: parity, type: binary}}.")
    known = {f.name for f in fields(Task)}
    unknown = sorted(set(item) - known)
    if unknown:
        raise ValueError(f"MultiTaskClassifier: tasks[{index}] has unknown keys {unknown}; a task has "
                         f"{sorted(known)}.")
    if "name" not in item:
        raise ValueError(f"MultiTaskClassifier: tasks[{index}]={item!r} has no name; give each task a name.")
    return Task(**item)


def resolve_tasks(
    tasks: list[Task | dict[str, Any]] | None, num_classes: int | None, weighting: str
) -> list[Task]:
    """Validated tasks with every default filled in (losses, metrics, the main task's classes).

    Raises:
        ValueError: an empty list, a bad or repeated name, a type / loss / metric that does not fit,
            missing or conflicting class counts, not exactly one main task, a non-multiclass main task,
            or a non-default ``weight`` with a weighting that ignores it.
    """
    given = [Task(name="label", main=True)] if tasks is None else [_task(t, i) for i, t in enumerate(tasks)]
    if not given:
        raise ValueError("MultiTaskClassifier: tasks=[] declares no task; give at least the main task.")
    if len(given) == 1 and not given[0].main:
        given[0].main = True
    names = [t.name for t in given]
    mains = [t.name for t in given if t.main]
    if len(mains) != 1:
        raise ValueError(f"MultiTaskClassifier: {len(mains)} main tasks {mains} among {names}; set main: "
                         "true on "
                         f"exactly one task (the one predict and export serve).")
    for t in given:
        _check_name(t.name, names)
        _resolve_task(t, num_classes, weighting)
    return given


def _check_name(name: Any, names: list[str]) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or hasattr(nn.ModuleDict(), name):
        raise ValueError(f"MultiTaskClassifier: task name {name!r} must be an identifier (letters, digits, "
                         "_) "
                         f"and not a torch.nn.ModuleDict attribute; rename it, e.g. 'parity'.")
    if names.count(name) > 1:
        raise ValueError(f"MultiTaskClassifier: task name {name!r} appears {names.count(name)} times; "
                         f"give each task its own name.")


def _resolve_task(t: Task, num_classes: int | None, weighting: str) -> None:
    """Check one task and fill in its defaults (class count, loss, metrics), in place."""
    where = f"MultiTaskClassifier: task {t.name!r}"
    if t.type not in _LOSSES:
        raise ValueError(f"{where}: type={t.type!r} is not one of {list(_LOSSES)}.")
    if t.main and t.type != "multiclass":
        raise ValueError(f"{where}: the main task has type={t.type!r}; the main task must be multiclass "
                         f"(write a yes/no main task as multiclass with num_classes: 2).")
    _resolve_classes(t, num_classes, where)
    t.loss = t.loss if t.loss is not None else _LOSSES[t.type][0]
    if t.loss not in _LOSSES[t.type]:
        raise ValueError(f"{where}: loss={t.loss!r} does not fit type {t.type!r}; use one of "
                         f"{list(_LOSSES[t.type])}.")
    if t.metrics is None:
        t.metrics = {"multiclass": ["acc", "f1"] + (["acc_top5"] if (t.num_classes or 0) > 5 else []),
                     "binary": ["acc", "f1"], "regression": ["mae"]}[t.type]
    bad = [m for m in t.metrics if m not in _METRICS[t.type]]
    if bad:
        raise ValueError(f"{where}: metric {bad[0]!r} is not available for type {t.type!r}; use some of "
                         f"{list(_METRICS[t.type])}.")
    if "acc_top5" in t.metrics and (t.num_classes or 0) <= 5:
        raise ValueError(f"{where}: acc_top5 needs more than 5 classes, the task has {t.num_classes}; drop "
                         "it.")
    if not t.weight >= 0:
        raise ValueError(f"{where}: weight={t.weight} must be >= 0.")
    if t.weight != 1.0 and weighting != "fixed":
        raise ValueError(f"{where}: weight={t.weight} is ignored by weighting={weighting!r}, which sets the "
                         "weights "
                         f"itself; drop weight or use weighting: fixed.")


def _resolve_classes(t: Task, num_classes: int | None, where: str) -> None:
    if t.type != "multiclass":
        if t.num_classes is not None:
            raise ValueError(f"{where}: num_classes={t.num_classes} is only for multiclass tasks; drop it "
                             "for "
                             f"type {t.type!r}.")
        return
    if t.main and num_classes is not None:
        if t.num_classes is not None and t.num_classes != num_classes:
            raise ValueError(f"{where}: num_classes={t.num_classes} but the model's "
                             f"num_classes={num_classes} "
                             f"(linked from the data); drop the task's num_classes or make them equal.")
        t.num_classes = num_classes
    if t.num_classes is None or t.num_classes < 2:
        raise ValueError(f"{where}: a multiclass task needs num_classes >= 2, got {t.num_classes}; set it "
                         f"(the main task may take the model's num_classes instead).")


def _metric(task: Task, key: str) -> Metric:
    n = task.num_classes or 0
    return {
        ("multiclass", "acc"): lambda: multiclass_metric(n, "acc"),  # the path ImageClassifier takes too
        ("multiclass", "f1"): lambda: multiclass_metric(n, "f1"),
        ("multiclass", "acc_top5"): lambda: multiclass_metric(n, "acc_top5"),
        ("binary", "acc"): BinaryAccuracy,
        ("binary", "f1"): BinaryF1Score,
        ("binary", "auroc"): BinaryAUROC,
        ("regression", "mae"): MeanAbsoluteError,
        ("regression", "mse"): MeanSquaredError,
        ("regression", "rmse"): lambda: MeanSquaredError(squared=False),
        ("regression", "r2"): R2Score,
    }[(task.type, key)]()


class MainTaskModel(nn.Module):
    """The main task's encoder and head: ``forward(x)`` returns its logits. Shares the parameters."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class MultiTaskClassifier(EpochMetricLogging, LightningModule):
    """Several tasks on one timm encoder (hard sharing) or on one encoder each (soft sharing).

    Parameter groups follow :class:`~lightkit.models.ImageClassifier`: one per encoder stage
    (``encoder.stem``, ``encoder.block1`` ... from timm's ``group_matcher``; with soft sharing a stage
    group holds that stage of every task's encoder), ``head`` (all task heads), each split into decay /
    no-decay, plus ``loss_weights`` (the uncertainty log-variances, no weight decay) which belongs to
    no layer group, so ``FineTune`` never freezes it. The batch is ``(x, target_1, target_2, ...)``;
    a data module with ``task_names`` (``lightkit.data.multitask``) names the columns and tasks
    are matched to them by name (extra columns are ignored), otherwise by position.

    Args:
        tasks: the tasks (:class:`Task` fields as YAML mappings); default one multiclass main task.
        encoder: timm model name.
        num_classes: classes of the main task (linked from the data module by the CLI).
        pretrained: encoder weights, as for ``ImageClassifier`` (every soft-sharing encoder starts from them).
        in_chans: input channels (linked from the data module by the CLI).
        weighting: ``fixed`` (each task's ``weight``), ``uncertainty`` (Kendall et al. 2018, learned
            ``log sigma^2`` per task) or ``dwa`` (Liu et al. 2019, from the last two epochs' losses);
            see :mod:`lightkit.functional.multitask`.
        dwa_temperature: DWA's temperature ``T`` (> 0); larger is closer to equal weights.
        uncertainty_lr: LR of the ``loss_weights`` group (the log-variances); default the optimizer's.
            The log-variances start at 0 and move by about one LR per step, so a short fit at a
            fine-tuning LR leaves them near 0 (equal weights). torch's ``OneCycleLR`` with one ``max_lr``
            overwrites every group's LR; ``lightkit.lr_schedulers`` classes scale each group's own.
        sharing: ``hard`` (one encoder for all tasks) or ``soft`` (one encoder per task, all starting
            from the same weights, pulled together by an L2 penalty).
        soft_sharing_strength: ``lambda`` of the penalty ``lambda * sum_{i<j} ||theta_i - theta_j||^2``
            added to the training loss (per step, summed over parameters and task pairs).
        hidden: hidden widths of every head (empty: linear heads).
        dropout: dropout before each head layer.
        activation: head activation.
        head_init: head weight init.
        drop_path_rate: stochastic depth in the encoder, where supported.
        pretrained_strict: a weights file must fill every encoder tensor (another architecture is
            an error); ``false`` loads the tensors that fit and warns about those left random.
        class_names: names of the main task's classes (linked by the CLI).
        optimizer: optimizer factory called with the parameter groups.
        lr_scheduler: scheduler factory, as for ``ImageClassifier``.

    Raises:
        ValueError: bad tasks (see :func:`resolve_tasks`), soft sharing with one task, a negative
            strength, a non-positive temperature, class names that do not fit the main task.

    Logged keys: ``{train,val,test}/loss`` (the weighted total), ``{stage}/<metric>`` for the main task
    (``val/acc`` ... as ``ImageClassifier``), ``task/<name>/{stage}_loss`` and
    ``task/<name>/{stage}_<metric>``
    per task, ``task/<name>/weight`` (the factor in front of the task loss, per step) and
    ``task/<name>/sigma`` (uncertainty weighting), ``train/soft_sharing_penalty`` (soft sharing).
    """

    def __init__(
        self,
        tasks: list[Task] | None = None,
        encoder: str = "resnet18",
        num_classes: int | None = None,
        pretrained: bool | str | dict[str, bool | str] = False,
        in_chans: int = 3,
        weighting: Weighting = "fixed",
        dwa_temperature: float = 2.0,
        uncertainty_lr: float | None = None,
        sharing: Sharing = "hard",
        soft_sharing_strength: float = 1e-3,
        hidden: list[int] | None = None,
        dropout: float = 0.0,
        activation: Activation = "relu",
        head_init: HeadInit = "auto",
        drop_path_rate: float | None = None,
        pretrained_strict: bool = True,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if weighting not in ("fixed", "uncertainty", "dwa"):
            raise ValueError(f"MultiTaskClassifier: weighting={weighting!r} is not one of 'fixed', "
                             "'uncertainty', 'dwa'.")
        if sharing not in ("hard", "soft"):
            raise ValueError(f"MultiTaskClassifier: sharing={sharing!r} is not one of 'hard', 'soft'.")
        if not dwa_temperature > 0:
            raise ValueError(f"MultiTaskClassifier: dwa_temperature={dwa_temperature} must be > 0 (the paper "
                             "uses 2).")
        if uncertainty_lr is not None and (weighting != "uncertainty" or not uncertainty_lr > 0):
            raise ValueError(f"MultiTaskClassifier: uncertainty_lr={uncertainty_lr} needs "
                             "weighting='uncertainty' and "
                             f"a value > 0; drop it or fix it.")
        if not soft_sharing_strength >= 0:
            raise ValueError(f"MultiTaskClassifier: soft_sharing_strength={soft_sharing_strength} must be >= "
                             "0.")
        resolved = resolve_tasks(tasks, num_classes, weighting)
        if sharing == "soft" and len(resolved) < 2:
            raise ValueError(f"MultiTaskClassifier: sharing='soft' with {len(resolved)} task; soft sharing "
                             "needs two "
                             f"or more tasks (one encoder each), or use sharing: hard.")
        main = next(t for t in resolved if t.main)
        if class_names is not None and len(class_names) != main.num_classes:
            raise ValueError(f"MultiTaskClassifier: {len(class_names)} class_names for the main task "
                             f"{main.name!r} with "
                             f"{main.num_classes} classes; give one name per class.")
        self.save_hyperparameters(
            {  # every argument but the optimizer / scheduler factories
                # tasks as plain dicts, so checkpoints load with torch.load(weights_only=True); num_classes
                # resolved
                "tasks": [asdict(t) if isinstance(t, Task) else dict(t) for t in tasks]
                if tasks is not None
                else None,
                "encoder": encoder,
                "num_classes": main.num_classes,
                "pretrained": pretrained,
                "in_chans": in_chans,
                "weighting": weighting,
                "dwa_temperature": dwa_temperature,
                "uncertainty_lr": uncertainty_lr,
                "sharing": sharing,
                "soft_sharing_strength": soft_sharing_strength,
                "hidden": hidden,
                "dropout": dropout,
                "activation": activation,
                "head_init": head_init,
                "drop_path_rate": drop_path_rate,
                "pretrained_strict": pretrained_strict,
                "class_names": class_names,
            }
        )
        self.tasks = resolved
        self.main_task = main.name
        self.weighting = weighting
        self.sharing = sharing
        self.dwa_temperature = dwa_temperature
        self.uncertainty_lr = uncertainty_lr
        self.soft_sharing_strength = soft_sharing_strength
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.auxiliary_dropped = False

        first = create_encoder(
            encoder,
            pretrained=pretrained,
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
            pretrained_strict=pretrained_strict,
        )
        if sharing == "hard":
            self.encoder = first
        else:  # every task's encoder starts from the same weights: the penalty starts at 0
            self.encoders = nn.ModuleDict({t.name: first if i == 0 else copy.deepcopy(first)
                                           for i, t in enumerate(resolved)})
        width = first.num_features
        self.heads = nn.ModuleDict({
            t.name: ClassifierHead(width, t.num_classes if t.type == "multiclass" else 1, hidden, dropout,
                                   activation, head_init)
            for t in resolved
        })
        self.data_config = encoder_data_config(first)
        self._kinds = ["regression" if t.type == "regression" else "classification" for t in resolved]
        if weighting == "uncertainty":
            # s_k = log sigma_k^2 = 0: every task starts at weight 1 (1/2 for regression).
            self.log_vars = nn.Parameter(torch.zeros(len(resolved)))
        self._dwa_sum = torch.zeros(len(resolved), dtype=torch.float64)
        self._dwa_count = 0
        self._dwa_history: list[list[float]] = []  # average task losses of the last two finished epochs
        self._dwa_current = torch.ones(len(resolved))
        self._columns = {t.name: i for i, t in enumerate(resolved)}
        for stage in ("train", "val", "test"):
            per_task = {t.name: MetricCollection({k: _metric(t, k) for k in t.metrics}, compute_groups=False,
                                                 prefix=f"task/{t.name}/{stage}_") for t in resolved}
            # The main task's metrics again under {stage}/ (ModelCheckpoint monitors val/acc).
            # compute_groups=False:
            # state sharing once reported a wrong macro F1 (see ImageClassifier).
            per_task["_main"] = MetricCollection(
                {k: _metric(main, k) for k in main.metrics}, compute_groups=False, prefix=f"{stage}/"
            )
            setattr(self, f"{stage}_metrics", nn.ModuleDict(per_task))

    # -- model -------------------------------------------------------------------------------
    def task_encoder(self, name: str) -> nn.Module:
        """The encoder that feeds task ``name`` (the shared one with hard sharing)."""
        return self.encoder if self.sharing == "hard" else self.encoders[name]

    def forward_tasks(self, x: Tensor) -> dict[str, Tensor]:
        """Outputs of every task: logits (N, C) for multiclass, (N,) logits / values for binary /
        regression."""
        if self.sharing == "hard":
            features = self.encoder(x)
            outs = {name: head(features) for name, head in self.heads.items()}
        else:
            outs = {name: head(self.encoders[name](x)) for name, head in self.heads.items()}
        return {t.name: outs[t.name] if t.type == "multiclass" else outs[t.name].squeeze(1)
                for t in self.tasks if t.name in outs}

    def forward(self, x: Tensor) -> Tensor:
        """Main-task logits only: the auxiliary heads are not evaluated."""
        return self.heads[self.main_task](self.task_encoder(self.main_task)(x))

    def main_task_model(self) -> MainTaskModel:
        """The main task's encoder + head as one ``nn.Module`` (shared parameters), e.g. for export."""
        return MainTaskModel(self.task_encoder(self.main_task), self.heads[self.main_task])

    def drop_auxiliary_heads(self) -> MultiTaskClassifier:
        """Delete the auxiliary heads (and their encoders with soft sharing) in place, for deployment.

        ("At test time only use the decoder of your main task.") ``forward``, ``predict_step`` and
        :meth:`main_task_model` are unchanged; training and evaluation of all tasks need the full model.
        """
        for t in self.tasks:
            if not t.main:
                del self.heads[t.name]
                if self.sharing == "soft":
                    del self.encoders[t.name]
        if hasattr(self, "log_vars"):
            del self.log_vars
        self.auxiliary_dropped = True
        return self

    def layer_groups(self) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
        """Named layer groups from the stem to the heads, each a list of ``(param_name, param)``."""
        params = dict(self.named_parameters())
        template = self.encoder if self.sharing == "hard" else next(iter(self.encoders.values()))
        prefixes = ["encoder."] if self.sharing == "hard" else [f"encoders.{n}." for n in self.encoders]
        groups = [(f"encoder.{label}", [(p + n, params[p + n]) for p in prefixes for n in names])
                  for label, names in encoder_layer_groups(template)]
        groups.append(("head", [(n, p) for n, p in self.named_parameters() if n.startswith("heads.")]))
        return groups

    # -- losses ------------------------------------------------------------------------------
    def task_loss(self, task: Task, output: Tensor, target: Tensor) -> Tensor:
        """The task's own loss (mean over the batch)."""
        if task.type == "multiclass":
            return F.cross_entropy(output, target.long())
        if task.type == "binary":
            return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))
        fn = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[str(task.loss)]
        return fn(output, target.to(output.dtype))

    def task_weights(self) -> Tensor:
        """The factor in front of each task loss now: ``weight``, ``c exp(-s)`` (uncertainty) or DWA's."""
        if self.weighting == "uncertainty":
            return uncertainty_weights(self.log_vars.detach(), self._kinds)
        if self.weighting == "dwa":
            return self._dwa_current.clone()
        return torch.tensor([t.weight for t in self.tasks])

    def combine(self, losses: Tensor) -> Tensor:
        """The training objective from the per-task losses (K,), by ``weighting``."""
        if self.weighting == "uncertainty":
            return uncertainty_weighted_loss(losses, self.log_vars, self._kinds)
        return fixed_weighted_loss(losses, self.task_weights().to(losses))

    # -- steps -------------------------------------------------------------------------------
    def _targets(self, batch: Any) -> dict[str, Tensor]:
        targets = list(batch[1:])
        need = max(self._columns.values()) + 1
        if len(targets) < need:
            raise ValueError(f"MultiTaskClassifier: the batch has {len(targets)} target(s) but tasks "
                             f"{[t.name for t in self.tasks]} need {need}; use a multi-task data module "
                             f"(lightkit.data.multitask) or declare only the main task.")
        return {name: targets[i] for name, i in self._columns.items()}

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        if self.auxiliary_dropped:
            raise ValueError("MultiTaskClassifier: the auxiliary heads were dropped (drop_auxiliary_heads); "
                             "only "
                             "forward / predict work now. Reload the checkpoint to train or evaluate all "
                             "tasks.")
        x = batch[0]
        targets = self._targets(batch)
        outputs = self.forward_tasks(x)
        losses = torch.stack([self.task_loss(t, outputs[t.name], targets[t.name]) for t in self.tasks])
        total = self.combine(losses)
        on_step = stage == "train"
        n = x.shape[0]
        self.log(f"{stage}/loss", total.detach(), on_step=on_step, on_epoch=True, prog_bar=True, batch_size=n,
                 sync_dist=not on_step)
        metrics = getattr(self, f"{stage}_metrics")
        for t, loss in zip(self.tasks, losses, strict=True):
            self.log(f"task/{t.name}/{stage}_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=n,
                     sync_dist=True)
            out = outputs[t.name].detach()
            if (
                t.type == "binary"
            ):  # probabilities: torchmetrics would take logits that fall in [0, 1] as such
                out = out.sigmoid()
            target = targets[t.name].long() if t.type != "regression" else targets[t.name].to(out.dtype)
            metrics[t.name].update(out, target)
            self.log_metrics_once(metrics[t.name], on_step=False, on_epoch=True)
        metrics["_main"].update(outputs[self.main_task].detach(), targets[self.main_task].long())
        self.log_metrics_once(metrics["_main"], on_step=False, on_epoch=True, prog_bar=stage != "train")
        if stage == "train":
            self._log_weights(losses.detach())
        return total

    def _log_weights(self, losses: Tensor) -> None:
        weights = self.task_weights()
        logs = {f"task/{t.name}/weight": float(w) for t, w in zip(self.tasks, weights, strict=True)}
        if self.weighting == "uncertainty":
            sigma = torch.exp(0.5 * self.log_vars.detach())
            logs.update({f"task/{t.name}/sigma": float(s) for t, s in zip(self.tasks, sigma, strict=True)})
        if self.weighting == "dwa":
            self._dwa_sum += losses.double().cpu()
            self._dwa_count += 1
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if self.sharing == "soft" and self.soft_sharing_strength > 0:
            penalty = soft_sharing_penalty(list(self.encoders.values()))
            self.log(
                "train/soft_sharing_penalty", penalty.detach(), on_step=True, on_epoch=False, batch_size=1
            )
            loss = loss + self.soft_sharing_strength * penalty
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """The main task's ``{"probs": softmax, "index": ...}``, as ``ImageClassifier.predict_step``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = {"probs": self(x).softmax(dim=1)}
        if isinstance(batch, (tuple, list)) and len(batch) > 1:
            out["index"] = batch[1]
        return out

    # -- data, DWA state, optimisation -------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Match the tasks to the data module's target columns by name (``task_names``), if it names them."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "task_names", None)
        if names is None:
            return
        names = list(names)
        missing = [t.name for t in self.tasks if t.name not in names]
        if missing:
            raise ValueError(f"MultiTaskClassifier: tasks {missing} have no column in the data, whose "
                             "targets are "
                             f"{names}; rename the tasks to data columns.")
        if names[0] != self.main_task:
            raise ValueError(f"MultiTaskClassifier: the main task is {self.main_task!r} but the data's "
                             "labels "
                             f"(num_classes / class_names, linked into the model) are {names[0]!r}; make "
                             f"{names[0]!r} the main task or change the data's label column.")
        classes = getattr(datamodule, "task_num_classes", {}) or {}
        for t in self.tasks:
            if t.type == "multiclass" and classes.get(t.name) not in (None, t.num_classes):
                raise ValueError(f"MultiTaskClassifier: task {t.name!r} has num_classes={t.num_classes} but "
                                 "its data "
                                 f"column has {classes[t.name]} classes; set num_classes: {classes[t.name]}.")
        self._columns = {t.name: names.index(t.name) for t in self.tasks}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.weighting != "dwa":
            return
        # Fold the finished epoch in here, not at its end: a checkpoint written at the epoch's end (before
        # on_train_epoch_end) then holds the sums, and a resumed run folds them exactly as a straight one.
        if self._dwa_count:
            mean = (self._dwa_sum / self._dwa_count).float().to(self.device)
            mean = self.trainer.strategy.reduce(mean, reduce_op="mean")  # the same weights on every rank
            self._dwa_history = [*self._dwa_history, mean.cpu().tolist()][-2:]
            self._dwa_sum.zero_()
            self._dwa_count = 0
        history = torch.tensor(self._dwa_history) if self._dwa_history else torch.zeros(0, len(self.tasks))
        self._dwa_current = dwa_weights(history, self.dwa_temperature)

    def configure_optimizers(self) -> Any:
        groups = build_param_groups(self.layer_groups())
        if self.weighting == "uncertainty":
            group = {
                "params": [self.log_vars],
                "name": "loss_weights",
                "group": "loss_weights",
                "weight_decay": 0.0,
            }
            if self.uncertainty_lr is not None:
                group["lr"] = self.uncertainty_lr
            groups.append(group)
        optimizer = self.optimizer_factory(groups)
        if self.lr_scheduler_factory is None:
            return optimizer
        trainer = self.trainer if self._trainer is not None else None
        return {
            "optimizer": optimizer,
            "lr_scheduler": lr_scheduler_config(self.lr_scheduler_factory, optimizer, trainer),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightkit"] = {**inference_metadata(self), "main_task": self.main_task}
        checkpoint["lightkit_multitask"] = {"dwa_sum": self._dwa_sum.tolist(), "dwa_count": self._dwa_count,
                                            "dwa_history": [list(h) for h in self._dwa_history]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lightkit_multitask")
        if state:
            self._dwa_sum = torch.tensor(state["dwa_sum"], dtype=torch.float64)
            self._dwa_count = int(state["dwa_count"])
            self._dwa_history = [list(h) for h in state["dwa_history"]]
