"""Sanity checks before a long run: initial loss, gradient flow, overfitting a small sample, a short LR check.

These are steps 1-3 of the lecture's "possible strategy" (CS231n, "babysitting the learning
process": check the initial loss, overfit a tiny subset, find an LR that makes the loss go down)
and Karpathy's "A Recipe for Training Neural Networks" (http://karpathy.github.io/2019/04/25/recipe/:
"verify loss @ init", "overfit one batch", "visualize ... gradients"). Every check works on a deep
copy of the model under a fixed seed (the global RNG is restored afterwards), so the user's model
and the run that follows are untouched. Each result carries the measured numbers and, on failure,
a hint naming the YAML key to change.

The checks train with a plain loop (cross-entropy on ``model(x)`` logits, the model's optimizer
factory, a constant LR): callbacks (MixUp / CutMix), the LR scheduler and Lightning's precision
are not applied, so a failure points at the model, the data or the LR, not at the trainer.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from lightkit.functional.diagnose import LR_KEY, name_list

__all__ = [
    "CHECKS",
    "LR_KEY",
    "CheckName",
    "CheckResult",
    "SanityReport",
    "gradient_check",
    "initial_loss_check",
    "lr_check",
    "overfit_check",
    "run_sanity",
    "sample_batches",
]

CheckName = Literal["initial_loss", "gradients", "overfit", "lr"]
CHECKS: tuple[CheckName, ...] = ("initial_loss", "gradients", "overfit", "lr")
WD_KEY = "model.init_args.optimizer.init_args.weight_decay"
Batch = tuple[Tensor, Tensor]
OptimizerFactory = Callable[[list[dict[str, Any]]], Optimizer]

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
# Float attributes through which timm modules apply dropout / stochastic depth in forward
# (ResNet.drop_rate in forward_head, DropPath.drop_prob); zeroed on the overfit copy.
_DROP_ATTRS = ("drop_rate", "drop_prob", "drop_path_rate")
_PROBE_LR = 0.01  # SGD step that wakes zero-initialised branches in the gradient check


@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes:
        name: the check (``initial_loss``, ``gradients``, ``overfit``, ``lr``).
        passed: whether it passed.
        message: one line: what was measured against what was expected.
        measured: the numbers behind the message (JSON-serialisable).
        hint: on failure, what to change, naming the YAML key; empty when passed.
    """

    name: str
    passed: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict)
    hint: str = ""


@dataclass
class SanityReport:
    """The results of :func:`run_sanity`, in the order the checks ran."""

    checks: list[CheckResult]
    seed: int = 0
    seconds: float = 0.0  # the whole report: data set-up, sampling and every check (set by its caller)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    def failed(self) -> list[CheckResult]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"SanityReport: no check {name!r}; it has {[c.name for c in self.checks]}.")

    def to_dict(self) -> dict[str, Any]:
        """``{"passed": bool, "seed": int, "seconds": float, "checks": [...]}`` for ``sanity.json``."""
        return {"passed": self.passed, "seed": self.seed, "seconds": self.seconds,
                "checks": [asdict(c) for c in self.checks]}


# -- helpers -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run under ``torch.manual_seed(seed)`` and restore the global CPU / CUDA RNG state afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of the network; its callables (optimizer and scheduler factories) and its trainer are
    shared, not copied: a LightningCLI factory holds the CLI, its Trainer, data and loggers (copying
    them made each check cost seconds and started a W&B run)."""
    shared = {id(v): v for v in vars(model).values()
              if callable(v) and not isinstance(v, (nn.Module, Tensor))
              and getattr(v, "__self__", None) is not model}  # a bound method of the model is copied with it
    trainer = getattr(model, "_trainer", None)
    if trainer is not None:
        shared[id(trainer)] = trainer
    clone = copy.deepcopy(model, shared).to(device)
    clone.train()
    return clone


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    logits = model(x)
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"sanity: the model returned {shape}; the checks need class logits of shape (N, C).")
    return logits


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The model's own optimizer parameter groups (layer groups, decay / no-decay), trainable parameters only."""
    layer_groups = getattr(model, "layer_groups", None)
    if not callable(layer_groups):
        return [{"params": [p for _, p in _trainable(model)]}]
    from lightkit.models.classifier import build_param_groups

    groups = []
    for group in build_param_groups(layer_groups()):
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    return groups


def _optimizer(model: nn.Module, factory: OptimizerFactory | None, lr: float | None, factor: float = 1.0,
               no_weight_decay: bool = False) -> Optimizer:
    factory = factory if factory is not None else getattr(model, "optimizer_factory", None)
    if factory is None:
        raise TypeError(f"sanity: {type(model).__name__} has no optimizer_factory; pass optimizer=, e.g. "
                        f"functools.partial(torch.optim.AdamW, lr=1e-3).")
    optimizer = factory(_param_groups(model))
    for group in optimizer.param_groups:
        group["lr"] = (lr if lr is not None else float(group["lr"])) * factor
        if no_weight_decay and "weight_decay" in group:
            group["weight_decay"] = 0.0
    return optimizer


def _base_lr(model: nn.Module, factory: OptimizerFactory | None, lr: float | None) -> float:
    if lr is not None:
        return lr
    if not _trainable(model):
        return float("nan")
    return max(float(g["lr"]) for g in _optimizer(model, factory, None).param_groups)


def _to(batch: Batch, device: torch.device) -> Batch:
    return batch[0].to(device), batch[1].to(device)


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    hard = y.argmax(dim=1) if y.ndim == 2 else y
    return (logits.argmax(dim=1) == hard).float().mean()


def _cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Batches forever: a loader is iterated again (a new shuffle) each time it is exhausted."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("sanity: the batches are empty; the train split has no images.")


def _disable_regularization(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _DROPOUT):
            module.p = 0.0
        for attr in _DROP_ATTRS:
            if isinstance(getattr(module, attr, None), float) and not isinstance(module, _DROPOUT):
                setattr(module, attr, 0.0)


def _label_smoothing(model: nn.Module, label_smoothing: float | None) -> float:
    value = float(getattr(model, "label_smoothing", 0.0) if label_smoothing is None else label_smoothing)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sanity: label_smoothing={value} must be in [0, 1).")
    return value


# -- argument checks (shared by the checks and run_sanity, which validates before any work) ------
def _check_tolerance(tolerance: float) -> None:
    if tolerance <= 0:
        raise ValueError(f"initial_loss_check: tolerance={tolerance} must be > 0 (a fraction of ln(C), e.g. 0.25).")


def _check_overfit_args(steps: int, target_accuracy: float, lr: float | None) -> None:
    if steps < 1:
        raise ValueError(f"overfit_check: steps={steps} must be >= 1 (100 is the default).")
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"overfit_check: target_accuracy={target_accuracy} must be in (0, 1]; 0.99 is the default.")
    if lr is not None and lr < 0:
        raise ValueError(f"overfit_check: lr={lr} must be >= 0.")


def _check_lr_args(factors: Sequence[float], steps: int, min_decrease: float, lr: float | None) -> None:
    if not factors or 1.0 not in factors or min(factors) <= 0:
        raise ValueError(f"lr_check: factors={list(factors)} must be positive and include 1.0 (the configured LR).")
    if steps < 5:
        raise ValueError(f"lr_check: steps={steps} must be >= 5 (the first and last fifth are compared).")
    if not 0.0 <= min_decrease < 1.0:
        raise ValueError(f"lr_check: min_decrease={min_decrease} must be in [0, 1); 0.05 is the default.")
    if lr is not None and lr < 0:
        raise ValueError(f"lr_check: lr={lr} must be >= 0.")


# -- data ----------------------------------------------------------------------------------------
def sample_batches(loader: Iterable[Any], num_batches: int = 2, batch_size: int | None = None) -> list[Batch]:
    """A fixed sample: the first ``num_batches`` batches of ``loader``, re-cut to ``batch_size`` images each.

    Args:
        loader: yields ``(x, y, ...)`` batches (extra items are dropped).
        num_batches: number of batches in the sample (>= 1).
        batch_size: images per batch; ``None`` keeps the loader's batches as they are.

    Raises:
        ValueError: ``num_batches`` or ``batch_size`` below 1, or the loader holds too few images.
    """
    if num_batches < 1:
        raise ValueError(f"sample_batches: num_batches={num_batches} must be >= 1.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"sample_batches: batch_size={batch_size} must be >= 1 (or None: the loader's).")
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    wanted = None if batch_size is None else num_batches * batch_size
    for batch in loader:
        xs.append(batch[0])
        ys.append(batch[1])
        have = sum(len(y) for y in ys)
        if (wanted is None and len(ys) == num_batches) or (wanted is not None and have >= wanted):
            break
    if batch_size is None:
        if len(ys) < num_batches:
            raise ValueError(f"sample_batches: the loader has {len(ys)} batches, fewer than num_batches={num_batches}.")
        return list(zip(xs, ys, strict=True))
    x, y = torch.cat(xs), torch.cat(ys)
    if len(y) < num_batches * batch_size:
        raise ValueError(f"sample_batches: the loader has {len(y)} images, fewer than num_batches * batch_size = "
                         f"{num_batches * batch_size}; lower them.")
    cuts = [slice(i * batch_size, (i + 1) * batch_size) for i in range(num_batches)]
    return [(x[cut], y[cut]) for cut in cuts]


# -- checks --------------------------------------------------------------------------------------
def _pretrained(model: nn.Module) -> bool:
    """Whether the module says its encoder starts from pretrained weights (``hparams.pretrained``)."""
    hparams = getattr(model, "hparams", None)
    value = hparams.get("pretrained", False) if hparams is not None else False
    if isinstance(value, dict):  # weights by channels: the entry for the model's input channels
        value = {str(k): v for k, v in value.items()}.get(str(hparams.get("in_chans", 3)), False)
    return bool(value) and value not in ("false", "False", "none", "None")


def initial_loss_check(model: nn.Module, batches: Sequence[Batch], tolerance: float = 0.25,
                       label_smoothing: float | None = None, seed: int = 0,
                       device: torch.device | str | None = None) -> CheckResult:
    """Loss at initialisation against ``ln(C)``: a fresh head should predict about uniformly.

    Karpathy's "verify loss @ init": for ``C`` classes, uniform predictions give a cross-entropy of
    ``ln(C)`` (2.30 for 10 classes). With label smoothing ``eps`` the target is ``(1 - eps) * onehot +
    eps / C`` and the loss of uniform predictions is still ``-sum_c q_c ln(1 / C) = ln(C)``; smoothing
    only raises the loss of confident predictions. A random head is not exactly uniform, hence the
    tolerance. Much higher: the logits are too large at init (head init, input normalisation); much
    lower: the head is already trained (then ignore it) or the labels leak into the input.
    Measured in training mode without gradients (the loss the first step sees), on a copy.

    Args:
        model: classifier returning logits (N, C); not modified.
        batches: batches to average the loss over.
        tolerance: allowed deviation from ``ln(C)``, as a fraction of ``ln(C)`` (> 0).
        label_smoothing: epsilon of the loss; default the model's ``label_smoothing`` attribute, else 0.
        seed: seed of the forward pass (dropout).
        device: where to run; default the model's device.

    Raises:
        ValueError: ``tolerance <= 0``, ``label_smoothing`` outside [0, 1), no batches.
    """
    _check_tolerance(tolerance)
    if not batches:
        raise ValueError("initial_loss_check: no batches; give at least one (x, y) batch.")
    eps = _label_smoothing(model, label_smoothing)
    dev = _device(model, device)
    with _seeded(seed), torch.no_grad():
        clone = _copy(model, dev)
        losses, classes = [], 0
        for batch in batches:
            x, y = _to(batch, dev)
            logits = _logits(clone, x)
            classes = logits.shape[1]
            losses.append(float(F.cross_entropy(logits.float(), y, label_smoothing=eps)))
    loss = sum(losses) / len(losses)
    expected = math.log(classes)
    measured = {"loss": loss, "expected": expected, "classes": classes, "label_smoothing": eps, "tolerance": tolerance}
    message = f"initial loss {loss:.4g}, expected ln({classes}) = {expected:.4g} +- {tolerance:.0%}"
    if math.isfinite(loss) and abs(loss - expected) <= tolerance * expected:
        return CheckResult("initial_loss", True, message, measured)
    if math.isfinite(loss) and loss < expected and _pretrained(model):
        # Pretrained features are already class-separated: a random head on them can land below chance.
        measured["pretrained"] = True
        return CheckResult("initial_loss", True, message + " (below: expected with a pretrained encoder)", measured)
    if not math.isfinite(loss) or loss > expected:
        hint = ("the logits are too large at init: scale the head init down (`model.init_args.head_init: xavier`), "
                "check the input normalisation (`data.init_args.mean` / `data.init_args.std`) and the labels")
    else:
        hint = ("the loss is below chance before training: fine if the head is pretrained on these classes "
                "(`model.init_args.pretrained`), otherwise the labels leak into the inputs")
    return CheckResult("initial_loss", False, message, measured, hint)


def gradient_check(model: nn.Module, batch: Batch, seed: int = 0,
                   device: torch.device | str | None = None) -> CheckResult:
    """Every trainable parameter gets a finite, non-zero gradient from the loss.

    One forward / backward on a copy. Parameters without a gradient are probed again after one
    plain SGD step (lr 0.01): zero-initialised residual branches (timm's ``zero_init_last``, the
    last BatchNorm scale of each block set to 0) legitimately get no gradient at step 0 and do
    after it, while a detached or unused branch never does. This is why :class:`Diagnose` skips
    its ``no_gradient`` check at step 0.

    Args:
        model: classifier returning logits (N, C); not modified.
        batch: one ``(x, y)`` batch.
        seed: seed of the forward passes (dropout).
        device: where to run; default the model's device.
    """
    dev = _device(model, device)
    with _seeded(seed):
        clone = _copy(model, dev)
        params = _trainable(clone)
        if not params:
            return CheckResult("gradients", False, "no trainable parameters", {"trainable": 0},
                               "every parameter has requires_grad=False: unfreeze the model (check the "
                               "fine-tuning callback in `trainer.callbacks`)")
        x, y = _to(batch, dev)

        def backward() -> tuple[list[str], list[str]]:
            clone.zero_grad(set_to_none=True)
            F.cross_entropy(_logits(clone, x).float(), y).backward()
            missing = [n for n, p in params if p.grad is None or not bool(p.grad.any())]
            nonfinite = [n for n, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            return missing, nonfinite

        first, nonfinite = backward()
        still = first
        if first and not nonfinite:
            with torch.no_grad():
                for _, p in params:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-_PROBE_LR)
            still, nonfinite = backward()
    woken = [n for n in first if n not in still]
    measured = {"trainable": len(params), "no_gradient": still, "zero_init": woken, "nonfinite": nonfinite}
    if nonfinite:
        return CheckResult("gradients", False, f"{len(nonfinite)} of {len(params)} trainable parameters get NaN/Inf "
                           f"gradients ({name_list(nonfinite)})", measured,
                           "check the init (`model.init_args.head_init`) and the input normalisation "
                           "(`data.init_args.mean` / `data.init_args.std`)")
    if still:
        return CheckResult("gradients", False, f"{len(still)} of {len(params)} trainable parameters get no gradient "
                           f"({name_list(still)})", measured,
                           "they do not reach the loss: fix the forward pass (a .detach(), an unused module, units "
                           "dead for the whole batch) or freeze them on purpose (requires_grad=False)")
    extra = f" ({len(woken)} zero-initialised, reached after one step)" if woken else ""
    return CheckResult("gradients", True, f"all {len(params)} trainable parameters get a gradient{extra}", measured)


def overfit_check(model: nn.Module, batches: Sequence[Batch], steps: int = 100, target_accuracy: float = 0.99,
                  optimizer: OptimizerFactory | None = None, lr: float | None = None, seed: int = 0,
                  device: torch.device | str | None = None) -> CheckResult:
    """Overfit a small fixed sample to ~100 % training accuracy with regularisation off.

    The lecture's step 2 and Karpathy's "overfit one batch": a model that cannot memorise a few
    dozen images has a bug (labels, loss, a frozen or disconnected model, an LR far off). On a copy:
    dropout and stochastic depth off, weight decay 0, label smoothing 0; the caller passes
    unaugmented batches. The batches are cycled, one optimizer step per batch, at the configured
    (constant) LR. Passes as soon as every batch reaches ``target_accuracy`` in its forward pass.

    Args:
        model: classifier returning logits (N, C); not modified.
        batches: the fixed sample, e.g. 2 batches of 16 (:func:`sample_batches`).
        steps: maximum optimizer steps (>= 1).
        target_accuracy: training accuracy on every batch that counts as overfitted, in (0, 1].
        optimizer: optimizer factory called with parameter groups; default ``model.optimizer_factory``.
        lr: LR of every group; default the factory's.
        seed: seed of the run.
        device: where to run; default the model's device.

    Raises:
        ValueError: ``steps < 1``, ``target_accuracy`` outside (0, 1], ``lr < 0``, no batches.
        TypeError: no optimizer factory.
    """
    _check_overfit_args(steps, target_accuracy, lr)
    if not batches:
        raise ValueError("overfit_check: no batches; give at least one (x, y) batch.")
    dev = _device(model, device)
    samples = sum(len(b[1]) for b in batches)
    with _seeded(seed):
        clone = _copy(model, dev)
        if not _trainable(clone):
            return CheckResult("overfit", False, f"cannot overfit {samples} images: no trainable parameters",
                               {"samples": samples, "trainable": 0},
                               "every parameter has requires_grad=False: unfreeze the model")
        _disable_regularization(clone)
        opt = _optimizer(clone, optimizer, lr, no_weight_decay=True)
        base_lr = max(float(g["lr"]) for g in opt.param_groups)
        data = [_to(b, dev) for b in batches]
        accs = [0.0] * len(data)
        loss = float("nan")
        done = None
        for step in range(steps):
            x, y = data[step % len(data)]
            logits = _logits(clone, x)
            loss_t = F.cross_entropy(logits.float(), y)
            accs[step % len(data)] = float(_accuracy(logits, y))
            loss = float(loss_t.detach())
            if not math.isfinite(loss):
                break
            if step >= len(data) - 1 and min(accs) >= target_accuracy:
                done = step
                break
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
    accuracy = sum(accs) / len(accs)
    measured = {"samples": samples, "batches": len(data), "steps": steps, "steps_needed": done,
                "accuracy": accuracy, "loss": loss, "lr": base_lr, "target_accuracy": target_accuracy}
    if done is not None:
        return CheckResult("overfit", True, f"{samples} images overfitted to {accuracy:.0%} in {done} steps "
                           f"(lr {base_lr:.3g}, regularisation off)", measured)
    message = (f"{samples} images at {accuracy:.0%} training accuracy after {steps} steps "
               f"(loss {loss:.4g}, lr {base_lr:.3g})")
    if not math.isfinite(loss):
        hint = f"the loss diverged: lower `{LR_KEY}` (now {base_lr:.3g}), e.g. 10x"
    elif base_lr == 0:
        hint = f"the LR is 0: set `{LR_KEY}` (e.g. 1e-3 for AdamW)"
    else:
        frozen = sum(1 for p in clone.parameters() if not p.requires_grad)
        hint = (f"raise `{LR_KEY}` (now {base_lr:.3g}) or `--sanity.overfit_steps`; check the labels and that the "
                f"model is not frozen ({frozen} of {sum(1 for _ in clone.parameters())} parameter tensors have "
                f"requires_grad=False)")
    return CheckResult("overfit", False, message, measured, hint)


def _decreased(losses: list[float], min_decrease: float) -> tuple[bool, float, float]:
    window = max(2, len(losses) // 5)
    first = sum(losses[:window]) / window
    last = sum(losses[-window:]) / window
    ok = all(math.isfinite(v) for v in losses) and last <= (1.0 - min_decrease) * first
    return ok, first, last


def lr_check(model: nn.Module, batches: Iterable[Batch], factors: Sequence[float] = (0.1, 1.0, 10.0), steps: int = 100,
             min_decrease: float = 0.05, optimizer: OptimizerFactory | None = None, lr: float | None = None,
             label_smoothing: float | None = None, seed: int = 0,
             device: torch.device | str | None = None) -> CheckResult:
    """A short run per LR: does the training loss go down within ``steps`` steps?

    The lecture's step 3 ("find an LR that makes the loss go down"): for each factor, a fresh copy is
    trained for ``steps`` steps at ``factor`` times the configured LR (every parameter group
    scaled alike), with weight decay and label smoothing as configured. The loss went down when the
    mean of the last fifth of the step losses is at least ``min_decrease`` below the mean of the
    first fifth. Passes when it goes down at the configured LR (factor 1); the other factors make
    the hint ("went down at 10x: raise the LR").

    It stops as soon as it has its answer: factor 1 runs first, and the others only when it fails
    (they are only needed for the hint); every run stops once its loss has gone down (checked every
    ``max(5, steps // 10)`` steps from ``steps // 5`` on, with the first and last fifth of the
    losses so far) or diverged. ``measured["runs"]`` lists the runs made, with their step counts.

    Args:
        model: classifier returning logits (N, C); not modified.
        batches: training batches, iterated again when exhausted (a DataLoader or a list).
        factors: LR multipliers, must include 1.0.
        steps: optimizer steps per LR (>= 5).
        min_decrease: fraction the smoothed loss must fall, in [0, 1).
        optimizer: optimizer factory called with parameter groups; default ``model.optimizer_factory``.
        lr: base LR of every group; default the factory's.
        label_smoothing: epsilon of the loss; default the model's ``label_smoothing`` attribute, else 0.
        seed: seed of each run (each LR starts from the same weights and RNG state).
        device: where to run; default the model's device.

    Raises:
        ValueError: ``factors`` without 1.0 or with a value <= 0, ``steps < 5``, ``min_decrease`` outside [0, 1).
        TypeError: no optimizer factory.
    """
    factors = [float(f) for f in factors]
    _check_lr_args(factors, steps, min_decrease, lr)
    eps = _label_smoothing(model, label_smoothing)
    dev = _device(model, device)
    if not _trainable(model):
        return CheckResult("lr", False, "no trainable parameters", {"trainable": 0},
                           "every parameter has requires_grad=False: unfreeze the model")
    base = _base_lr(model, optimizer, lr)
    runs: list[dict[str, Any]] = []
    check_every, earliest = max(5, steps // 10), max(5, steps // 5)
    for factor in sorted(factors, key=lambda f: f != 1.0):  # the configured LR first
        if factor != 1.0 and runs and runs[0]["decreased"]:
            break  # the configured LR lowers the loss: the other factors would only make a hint
        with _seeded(seed):
            clone = _copy(model, dev)
            opt = _optimizer(clone, optimizer, lr, factor)
            losses: list[float] = []
            stream = _cycle(batches)
            for step in range(steps):
                x, y = _to(next(stream), dev)
                loss = F.cross_entropy(_logits(clone, x).float(), y, label_smoothing=eps)
                losses.append(float(loss.detach()))
                if not math.isfinite(losses[-1]):
                    break
                if step + 1 >= earliest and (step + 1) % check_every == 0 and _decreased(losses, min_decrease)[0]:
                    break  # answered: the loss went down
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        ok, first, last = _decreased(losses, min_decrease)
        runs.append({"factor": factor, "lr": base * factor, "decreased": ok, "first": first, "last": last,
                     "diverged": not all(math.isfinite(v) for v in losses), "steps": len(losses)})
    runs.sort(key=lambda r: r["factor"])
    configured = next(r for r in runs if r["factor"] == 1.0)
    measured = {"lr": base, "steps": steps, "min_decrease": min_decrease, "runs": runs}

    def describe(r: dict[str, Any]) -> str:
        return f"{r['lr']:.3g}: " + ("diverged" if r["diverged"] else f"{r['first']:.3g}->{r['last']:.3g}")

    message = f"loss over at most {steps} steps at lr " + ", ".join(
        describe(r) + f" ({r['steps']} steps)" for r in runs)
    if configured["decreased"]:
        return CheckResult("lr", True, message, measured)
    good = [r for r in runs if r["decreased"]]
    if good:
        best = min(good, key=lambda r: r["last"])
        hint = f"the loss went down at lr {best['lr']:.3g} ({best['factor']:g}x): set `{LR_KEY}: {best['lr']:.3g}`"
    elif configured["diverged"]:
        hint = (f"the loss diverged: lower `{LR_KEY}` (now {base:.3g}), e.g. 10x, "
                f"or clip (`trainer.gradient_clip_val: 1.0`)")
    else:
        hint = (f"the loss went down at none of these LRs: check `{LR_KEY}` (now {base:.3g}), the labels, the init "
                f"(`model.init_args.head_init`) and frozen layers; or raise `--sanity.lr_steps`")
    return CheckResult("lr", False, message, measured, hint)


def run_sanity(
    model: nn.Module,
    sample: Sequence[Batch],
    train_batches: Iterable[Batch],
    checks: Sequence[CheckName] = CHECKS,
    optimizer: OptimizerFactory | None = None,
    lr: float | None = None,
    label_smoothing: float | None = None,
    loss_tolerance: float = 0.25,
    overfit_steps: int = 100,
    overfit_accuracy: float = 0.99,
    lr_factors: Sequence[float] = (0.1, 1.0, 10.0),
    lr_steps: int = 100,
    min_decrease: float = 0.05,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> SanityReport:
    """Run the chosen checks in the order of the lecture's strategy and collect a :class:`SanityReport`.

    Args:
        model: classifier returning logits (N, C); never modified (each check works on a deep copy).
        sample: the fixed small sample (unaugmented): initial loss, gradients (its first batch) and overfitting.
        train_batches: training batches for the LR check (a DataLoader is iterated again when exhausted).
        checks: which of ``initial_loss``, ``gradients``, ``overfit``, ``lr`` to run.
        optimizer: optimizer factory; default ``model.optimizer_factory``.
        lr: base LR; default the optimizer factory's.
        label_smoothing: loss epsilon for the initial-loss and LR checks; default the model's.
        loss_tolerance: see :func:`initial_loss_check` (``tolerance``).
        overfit_steps: see :func:`overfit_check` (``steps``).
        overfit_accuracy: see :func:`overfit_check` (``target_accuracy``).
        lr_factors: see :func:`lr_check` (``factors``).
        lr_steps: see :func:`lr_check` (``steps``).
        min_decrease: see :func:`lr_check`.
        seed: seed of every check.
        device: where to run; default the model's device.

    Raises:
        ValueError: an unknown or repeated check name, or a bad value of a check's argument.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks or len(set(checks)) != len(checks):
        raise ValueError(f"run_sanity: checks={list(checks)}; give one or more distinct names of {list(CHECKS)}.")
    _check_tolerance(loss_tolerance)
    _check_overfit_args(overfit_steps, overfit_accuracy, lr)
    _check_lr_args([float(f) for f in lr_factors], lr_steps, min_decrease, lr)
    _label_smoothing(model, label_smoothing)
    if not sample:
        raise ValueError("run_sanity: the sample holds no batches; give at least one (x, y) batch.")
    results: list[CheckResult] = []
    for name in CHECKS:
        if name not in checks:
            continue
        start = time.perf_counter()
        if name == "initial_loss":
            result = initial_loss_check(model, sample, loss_tolerance, label_smoothing, seed, device)
        elif name == "gradients":
            result = gradient_check(model, sample[0], seed, device)
        elif name == "overfit":
            result = overfit_check(model, sample, overfit_steps, overfit_accuracy, optimizer, lr, seed, device)
        else:
            result = lr_check(model, train_batches, lr_factors, lr_steps, min_decrease, optimizer, lr,
                              label_smoothing, seed, device)
        result.measured["seconds"] = time.perf_counter() - start  # what each check costs, in sanity.json
        results.append(result)
    return SanityReport(results, seed)
