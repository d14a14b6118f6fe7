"""``Diagnose``: automatic diagnoses of a training run, each a one-line warning with the fix in YAML terms."""

from __future__ import annotations

import math
import os
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer

from lightkit.callbacks._monitor import check_pattern, paused, step_loss
from lightkit.functional.diagnose import (
    LIGHTKIT_TERMS,
    LR_KEY,
    DiagnosisKind,
    TrainingDiverged,
    dead_layers,
    exploding_loss,
    gradient_verdict,
    message,
    missing_gradients,
    name_list,
    saturated_layers,
    terms_for,
)
from lightkit.functional.stats import (
    ACTIVATION_STATS,
    ActivationRecorder,
    grad_norms,
    loss_noise,
    not_decreasing,
    overfitting,
    select_modules,
    to_host,
)

__all__ = ["LR_KEY", "Diagnose", "DiagnosisKind", "Finding", "TrainingDiverged"]

_INITIAL_STEPS = 10  # the "initial loss" is the mean of the first 10 finite step losses


@dataclass
class Finding:
    """One diagnosis: its kind, the optimizer step it was made at, the warning text and the layers involved."""

    kind: str
    step: int
    message: str
    layers: list[str] = field(default_factory=list)


def _current_lr(trainer: Trainer) -> float:
    """The largest LR of the first optimizer's groups (discriminative LRs move together under one schedule)."""
    optimizers = getattr(trainer, "optimizers", None) or []
    groups = optimizers[0].param_groups if optimizers else []
    return max((float(g["lr"]) for g in groups), default=math.nan)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _finite_weights(module: torch.nn.Module) -> bool:
    """All floating-point parameters finite (one host sync)."""
    flags = [p.detach().isfinite().all() for p in module.parameters() if p.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _saved_at(path: str) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (for names without ``step=N``, e.g. last.ckpt)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
    except Exception:  # noqa: BLE001 - any unreadable file is simply not the one looked for
        return None


class Diagnose(Callback):
    """Watches a run the way CS231n's "babysitting the learning process" does and says what to change.

    Each diagnosis is one ``rank_zero_warn`` line naming the YAML key to change (for a LightningModule
    lightkit did not write, the setting in words: :func:`lightkit.functional.diagnose.terms_for`), is appended to
    :attr:`findings`, and repeats at most once per ``warn_every_n_steps`` optimizer steps:

    - ``nonfinite_loss`` / ``exploding_loss`` / ``nonfinite_val_loss``: the training loss is NaN/Inf,
      or above ``explode_factor`` times its initial value, or the validation loss is NaN/Inf: the run
      diverged. The warning names the last checkpoint saved before it (Lightning's ``step=N`` file
      names are matched). With ``on_divergence: raise`` (default) :class:`TrainingDiverged` stops the
      fit at that step, so no checkpoint is written from the diverged weights (the lightkit CLI then
      tests the last good checkpoint, or exits non-zero when there is none); ``stop`` sets
      ``trainer.should_stop`` (Lightning still validates the stopped epoch and its ``ModelCheckpoint``
      may save the diverged weights: that checkpoint gets a second warning); ``warn`` only warns.
    - ``exploding_gradients`` / ``vanishing_gradients``: the global gradient norm (before clipping)
      is above ``max_grad_norm`` or non-finite / below ``min_grad_norm`` while the loss is still above
      10 % of its initial value (tiny gradients at convergence are fine).
    - ``no_gradient``: trainable parameters whose gradient is missing or exactly 0 (not checked at
      step 0, where zero-initialised residual branches legitimately get none).
    - ``dead_layer`` / ``saturated_layer``: a layer with at least ``dead_fraction`` of its units zero
      for the whole batch, or ``saturated_fraction`` of its tanh / sigmoid outputs saturated. Measured
      by this callback's own forward hooks, attached on check steps only.
    - ``overfitting``: validation loss above its best for ``overfit_patience`` evaluations while the
      training loss kept falling, and the LR is not above its value at the best evaluation (a warmup or a
      one-cycle's rising half lifts the validation loss by itself; :func:`lightkit.functional.stats.overfitting`).
      When the trainer's checkpoint callback (its first ``ModelCheckpoint``) keeps the best weights by the same
      validation loss (``mode: min``, ``save_top_k`` not 0), the finding is an info line, not a warning: those
      weights are from before the rise (``ckpt_path='best'``; the lightkit CLI tests them after ``fit``).
    - ``noisy_loss``: detrended coefficient of variation of the last ``window`` step losses at least
      ``noise_cv`` (:func:`lightkit.functional.stats.loss_noise`), ignored once the loss is under 5 %
      of its initial value. Not checked while a :class:`~lightkit.callbacks.mixing.MixUpCutMix` in the trainer's
      callbacks mixes batches (``prob > 0``, outside its ``off_last_epochs``): a mixed batch's loss differs from a
      clean one's by design (one info line says so).
    - ``loss_not_decreasing``: after ``plateau_steps`` steps the mean of the last ``window`` losses has
      not fallen ``min_decrease`` below the mean of the first 10.

    Cost: the step loss is read one step late (so the device is not stalled); under DDP its
    finiteness is agreed across ranks with one boolean all-reduce per step. The other checks run on
    rank zero every ``every_n_steps`` steps with one host sync. Nothing runs during the sanity check
    or while ``lightkit_pause_monitor`` is True (the LR range test sets it). All state is in
    ``state_dict``, so a resumed run diagnoses exactly as a straight one.

    Args:
        every_n_steps: interval of the gradient, activation and loss-shape checks, in optimizer steps.
        on_divergence: what a diverged run does: ``raise`` :class:`TrainingDiverged` at that step (no checkpoint
            from diverged weights), ``stop`` at the end of the step (Lightning may still checkpoint), or ``warn``.
        explode_factor: a training loss above this many times the mean of the first 10 counts as diverged
            (> 1; null: only NaN/Inf).
        max_grad_norm: global gradient L2 norm above which gradients are exploding.
        min_grad_norm: global gradient L2 norm below which gradients are vanishing.
        dead_fraction: fraction of dead units, in (0, 1], that makes a layer dead.
        saturated_fraction: fraction of saturated outputs, in (0, 1], that makes a tanh / sigmoid layer saturated.
        layers: modules to watch for dead / saturated units: ``"activations"`` or a regex on module names.
        overfit_patience: evaluations the validation loss must stay above its best (>= 1).
        window: step losses in the smoothing / noise window (>= 3).
        noise_cv: detrended coefficient of variation that counts as very noisy (> 0).
        plateau_steps: steps after which a loss that has not gone down is reported (>= window).
        min_decrease: fraction below the initial loss the smoothed loss must reach, in [0, 1).
        warn_every_n_steps: minimum optimizer steps between two warnings of the same kind (>= 1).
        val_loss: key of the validation loss in ``trainer.callback_metrics``.

    Raises:
        ValueError: an argument outside its range (the message says which); in ``setup``: ``layers``
            (a regex) matches no module.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        on_divergence: Literal["raise", "stop", "warn"] = "raise",
        explode_factor: float | None = 100.0,
        max_grad_norm: float = 1000.0,
        min_grad_norm: float = 1e-7,
        dead_fraction: float = 0.9,
        saturated_fraction: float = 0.9,
        layers: str = "activations",
        overfit_patience: int = 3,
        window: int = 50,
        noise_cv: float = 0.5,
        plateau_steps: int = 300,
        min_decrease: float = 0.01,
        warn_every_n_steps: int = 1000,
        val_loss: str = "val/loss",
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("overfit_patience", overfit_patience),
                            ("warn_every_n_steps", warn_every_n_steps)):
            if value < 1:
                raise ValueError(f"Diagnose: {name}={value} must be >= 1.")
        if not 0.0 <= min_grad_norm < max_grad_norm:
            raise ValueError(
                f"Diagnose: min_grad_norm={min_grad_norm}, max_grad_norm={max_grad_norm}; need 0 <= min < max "
                f"(defaults 1e-7 and 1000)."
            )
        for name, value in (("dead_fraction", dead_fraction), ("saturated_fraction", saturated_fraction)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"Diagnose: {name}={value} must be a fraction in (0, 1]; 0.9 is the default.")
        if on_divergence not in ("raise", "stop", "warn"):
            raise ValueError(f"Diagnose: on_divergence={on_divergence!r}; choose raise, stop or warn.")
        if explode_factor is not None and not explode_factor > 1.0:
            raise ValueError(f"Diagnose: explode_factor={explode_factor} must be > 1 (100 is the default), or null.")
        if window < 3:
            raise ValueError(f"Diagnose: window={window} must be >= 3 step losses; 50 is the default.")
        if noise_cv <= 0:
            raise ValueError(f"Diagnose: noise_cv={noise_cv} must be > 0; 0.5 is the default.")
        if plateau_steps < window:
            raise ValueError(f"Diagnose: plateau_steps={plateau_steps} must be >= window={window}; "
                             "raise it or lower window.")
        if not 0.0 <= min_decrease < 1.0:
            raise ValueError(f"Diagnose: min_decrease={min_decrease} must be a fraction in [0, 1); "
                             "0.01 is the default.")
        check_pattern("Diagnose", "layers", layers, ("activations",))
        self.every_n_steps = every_n_steps
        self.on_divergence = on_divergence
        self.explode_factor = explode_factor
        self._terms: dict[str, str] = LIGHTKIT_TERMS
        self.max_grad_norm = max_grad_norm
        self.min_grad_norm = min_grad_norm
        self.dead_fraction = dead_fraction
        self.saturated_fraction = saturated_fraction
        self.layers = layers
        self.overfit_patience = overfit_patience
        self.window = window
        self.noise_cv = noise_cv
        self.plateau_steps = plateau_steps
        self.min_decrease = min_decrease
        self.warn_every_n_steps = warn_every_n_steps
        self.val_loss = val_loss
        self._reset()
        self._recorder: ActivationRecorder | None = None
        self._params: list[tuple[str, torch.nn.Parameter]] = []
        self._batch_step = 0
        self._due = False
        self._mixing: Any = None  # the MixUpCutMix that mixes this fit's batches (setup), if any
        self._grads: Tensor | None = None
        self._has_grad: list[bool] = []

    def _reset(self) -> None:
        self.findings: list[Finding] = []
        self.last_warned: dict[str, int] = {}
        self.initial: list[float] = []
        self.recent: deque[float] = deque(maxlen=self.window)
        self.seen = 0
        self.since_eval = [0.0, 0]
        self.eval_train: list[float] = []
        self.eval_val: list[float] = []
        self.eval_lr: list[float] = []  # the (largest group's) LR at each evaluation; NaN when unknown
        self.nonfinite_step: int | None = None
        self.nonfinite_value: str | None = None  # "nan" / "inf" / "-inf": a string so states compare equal
        self.divergence: str = "nonfinite_loss"  # which kind of divergence nonfinite_step records
        self.checkpoint_steps: list[int] = []
        self.last_checked = -1
        self.last_mixed = -1  # the last step whose batch MixUpCutMix mixed: its loss stays in the window a while
        self._pending: list[tuple[int, Tensor]] = []
        self._warned_bad_checkpoint = False

    # -- setup -------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset()  # a new fit starts afresh; load_state_dict (after setup) restores a resumed one
        # lightkit's models are configured by YAML keys; any other module by its own code.
        self._terms = terms_for(pl_module)
        modules = select_modules(pl_module, self.layers)
        if not modules and self.layers != "activations":
            raise ValueError(
                f"Diagnose: layers={self.layers!r} matches no module of {type(pl_module).__name__}; give a regex over "
                f"its named_modules() names, or 'activations'."
            )
        self._recorder = ActivationRecorder(modules) if modules else None
        self._params = list(pl_module.named_parameters())
        from lightkit.callbacks.mixing import MixUpCutMix

        mixing = next((cb for cb in trainer.callbacks if isinstance(cb, MixUpCutMix) and cb.prob > 0), None)
        self._mixing = mixing
        if mixing is not None:
            rank_zero_info(f"Diagnose: noisy_loss not checked: MixUpCutMix mixes {mixing.prob:.0%} of training "
                           "batches, so the step loss varies by design.")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A resumed run starts from a checkpoint saved at this step: it is a good one.
        if trainer.global_step > 0 and trainer.global_step not in self.checkpoint_steps and self.nonfinite_step is None:
            self.checkpoint_steps.append(trainer.global_step)

    # -- per batch ---------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        self._batch_step = step
        if self._mixing is not None and self._mixing.active(trainer, pl_module):
            self.last_mixed = step
        self._due = (
            trainer.is_global_zero and not trainer.sanity_checking and not paused(trainer, pl_module)
            and self.nonfinite_step is None and step % self.every_n_steps == 0 and step != self.last_checked
        )
        if self._due:
            self.last_checked = step
            self._grads = None
            if self._recorder is not None:
                self._recorder.attach()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self._due and self._grads is None:
            with torch.no_grad():
                self._grads = grad_norms([p for _, p in self._params])
            self._has_grad = [p.grad is not None for _, p in self._params]

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._recorder is not None:
            self._recorder.remove()
        if paused(trainer, pl_module):
            self._due = False
            return
        loss = step_loss(outputs)
        if loss is not None:
            self._pending.append((self._batch_step, loss.detach().float().reshape(())))
        extra: list[Tensor] = []
        names: list[str] = []
        if self._due:
            stats = self._recorder.stats if self._recorder is not None else {}
            names = list(stats)
            if names:
                extra.append(torch.stack([stats[n] for n in names]))
            if self._grads is not None:
                extra.append(self._grads)
        # Off check steps the newest loss waits a step, so reading it never stalls the device.
        host = self._flush(trainer, keep_last=not self._due, extra=extra)
        if self._due and self.nonfinite_step is None:
            self._check(trainer, pl_module, names, host)
        self._due = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or paused(trainer, pl_module):
            return
        self._flush(trainer, keep_last=False)
        value = trainer.callback_metrics.get(self.val_loss)
        if value is not None and self.nonfinite_step is None and not math.isfinite(float(value)):
            self.nonfinite_step, self.nonfinite_value = trainer.global_step, str(float(value))
            self.divergence = "nonfinite_val_loss"
            self._on_nonfinite(trainer)
            return
        if value is None or self.since_eval[1] == 0 or self.nonfinite_step is not None:
            return
        self.eval_train.append(self.since_eval[0] / self.since_eval[1])
        self.eval_val.append(float(value))
        self.eval_lr.append(_current_lr(trainer))
        self.since_eval = [0.0, 0]
        if overfitting(self.eval_train, self.eval_val, self.overfit_patience, self.eval_lr):
            best = min(range(len(self.eval_val)),
                       key=lambda i: self.eval_val[i] if math.isfinite(self.eval_val[i]) else math.inf)
            kept = self._keeps_best(trainer)
            text = message(
                "overfitting_kept" if kept else "overfitting", self._terms, best=self.eval_val[best],
                since=len(self.eval_val) - 1 - best, now=self.eval_val[-1], train_then=self.eval_train[best],
                train_now=self.eval_train[-1], key=self.val_loss,
            )
            self._warn("overfitting", trainer.global_step, text, note=kept)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer, keep_last=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer, keep_last=False)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self._recorder is not None:
            self._recorder.remove()

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._flush(trainer, keep_last=False)
        if self.nonfinite_step is None and self.on_divergence != "warn" and not _finite_weights(pl_module):
            # The loss of these weights is only seen a step later; NaN/Inf weights are diverged already.
            self._record(trainer.global_step, float("nan"))
            self.nonfinite_value = "non-finite weights"
            self._on_nonfinite(trainer)
        if self.nonfinite_step is None:
            self.checkpoint_steps.append(trainer.global_step)
        elif not self._warned_bad_checkpoint:
            self._warned_bad_checkpoint = True
            rank_zero_warn(
                f"Diagnose: the checkpoint saved now (step {trainer.global_step}) holds the weights after the loss "
                f"went non-finite at step {self.nonfinite_step}; do not resume from it, use {self._last_good(trainer)}."
            )

    # -- losses ------------------------------------------------------------------------------
    def _flush(self, trainer: Trainer, keep_last: bool, extra: list[Tensor] | None = None) -> list[list[float]]:
        """Read pending step losses (and ``extra`` tensors) with one sync; record them; agree on NaN across ranks."""
        extra = extra or []
        take = self._pending[:-1] if keep_last else self._pending
        self._pending = self._pending[-1:] if keep_last else []
        parts = ([torch.stack([t.to(take[0][1].device) for _, t in take])] if take else []) + extra
        host = to_host(parts) if parts else []
        before = self.nonfinite_step
        if take:
            for (step, _), value in zip(take, host[0], strict=True):
                self._record(step, value)
        bad = self.nonfinite_step is not None
        if trainer.world_size > 1:  # every rank must stop at the same step, or DDP hangs
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad and before is None:
            self._on_nonfinite(trainer)
        return host[1:] if take else host

    def _record(self, step: int, value: float) -> None:
        if self.nonfinite_step is not None:
            return
        if not math.isfinite(value) or exploding_loss(value, self.initial, self.explode_factor, _INITIAL_STEPS):
            kind = "nonfinite_loss" if not math.isfinite(value) else "exploding_loss"
            self.nonfinite_step, self.nonfinite_value, self.divergence = (
                step, str(value) if kind == "nonfinite_loss" else f"{value:.4g}", kind)
            return
        if len(self.initial) < _INITIAL_STEPS:
            self.initial.append(value)
        self.recent.append(value)
        self.seen += 1
        self.since_eval = [self.since_eval[0] + value, self.since_eval[1] + 1]

    def _on_nonfinite(self, trainer: Trainer) -> None:
        if self.nonfinite_step is None:  # another rank saw it
            self.nonfinite_step = trainer.global_step
        action = {"raise": "stopping the run now", "stop": "stopping training",
                  "warn": "continuing (on_divergence=warn)"}[self.on_divergence]
        value = self.nonfinite_value or "non-finite on another rank"
        path, step = self._last_good_path(trainer)
        last_good = self._describe_last_good(path, step)
        start = _mean(self.initial)
        text = message(self.divergence, self._terms, value=value, step=self.nonfinite_step, action=action,
                       last_good=last_good, key=self.val_loss, initial=start,
                       factor=(float(value) / start) if self.divergence == "exploding_loss" and start else 0.0)
        self._warn(self.divergence, self.nonfinite_step, text)  # type: ignore[arg-type]
        if self.on_divergence == "stop":
            trainer.should_stop = True
        elif self.on_divergence == "raise":
            raise TrainingDiverged(text, self.nonfinite_step, path)

    def _last_good_path(self, trainer: Trainer) -> tuple[str | None, int | None]:
        """The newest checkpoint file saved before the divergence, and its step (the step alone when its
        file is not found among the checkpoint callbacks' files)."""
        bad = self.nonfinite_step if self.nonfinite_step is not None else trainer.global_step
        good = [s for s in self.checkpoint_steps if s < bad]
        if not good:
            return None, None
        step = max(good)
        pattern = re.compile(rf"step={step}(?!\d)")
        for callback in trainer.checkpoint_callbacks:  # read-only look at public attributes
            paths = [getattr(callback, "best_model_path", ""), getattr(callback, "last_model_path", ""),
                     *getattr(callback, "best_k_models", {})]
            folder = getattr(callback, "dirpath", None)
            if folder and os.path.isdir(folder):
                paths += sorted(os.path.join(folder, name) for name in os.listdir(folder))
            for path in paths:
                if path and os.path.exists(path) and (pattern.search(os.path.basename(str(path)))
                                                      or _saved_at(str(path)) == step):
                    return str(path), step
        return None, step

    @staticmethod
    def _describe_last_good(path: str | None, step: int | None) -> str:
        if step is None:
            return "none was saved before it (fix the run and start again)"
        return f"{path} (step {step})" if path else f"the one saved at step {step}"

    def _last_good(self, trainer: Trainer) -> str:
        return self._describe_last_good(*self._last_good_path(trainer))

    # -- periodic checks ---------------------------------------------------------------------
    def _check(self, trainer: Trainer, pl_module: LightningModule, act_names: list[str],
               host: list[list[float]]) -> None:
        step = self._batch_step
        start, now = _mean(self.initial), _mean(list(self.recent))
        terms = self._terms
        if act_names and self._recorder is not None:
            rows = host.pop(0)
            width = len(rows) // len(act_names)
            stats = {name: dict(zip(ACTIVATION_STATS, rows[i * width:(i + 1) * width], strict=False))
                     for i, name in enumerate(act_names)}
            dead = dead_layers(stats, self.dead_fraction)
            saturated = saturated_layers(stats, self._recorder.kinds, self.saturated_fraction)
            if dead:
                self._warn("dead_layer", step,
                           message("dead_layer", terms, count=len(dead), fraction=self.dead_fraction, step=step,
                                   layers=name_list(dead)),
                           [d.rsplit(" ", 1)[0] for d in dead])
            if saturated:
                self._warn("saturated_layer", step,
                           message("saturated_layer", terms, count=len(saturated), fraction=self.saturated_fraction,
                                   step=step, layers=name_list(saturated)),
                           [d.rsplit(" ", 1)[0] for d in saturated])
        if host:
            norms = host.pop(0)
            verdict, total = gradient_verdict(norms, self.min_grad_norm, self.max_grad_norm, now, start)
            if verdict == "exploding":
                self._warn("exploding_gradients", step,
                           message("exploding_gradients", terms, norm=total, step=step, limit=self.max_grad_norm))
            elif verdict == "vanishing":
                self._warn("vanishing_gradients", step,
                           message("vanishing_gradients", terms, norm=total, step=step, limit=self.min_grad_norm,
                                   loss=now))
            if step > 0:
                missing = missing_gradients([n for n, _ in self._params], norms, self._has_grad,
                                            [p.requires_grad for _, p in self._params])
                if missing:
                    self._warn("no_gradient", step,
                               message("no_gradient", terms, count=len(missing), step=step, layers=name_list(missing)),
                               missing)
        mixed = self.last_mixed >= 0 and step - self.last_mixed <= self.window  # a mixed loss is in the window
        if not mixed and len(self.recent) == self.window and math.isfinite(start) and now >= 0.05 * start:
            cv = loss_noise(list(self.recent))
            if math.isfinite(cv) and cv >= self.noise_cv:
                self._warn("noisy_loss", step,
                           message("noisy_loss", terms, step=step, cv=cv, limit=self.noise_cv, window=self.window))
        if self.seen >= self.plateau_steps and not_decreasing(self.initial, list(self.recent), self.min_decrease):
            self._warn("loss_not_decreasing", step,
                       message("loss_not_decreasing", terms, seen=self.seen, now=now, initial=start))

    def _keeps_best(self, trainer: Trainer) -> bool:
        """Whether the trainer's checkpoint callback (the first ModelCheckpoint: the one ``ckpt_path='best'`` and the
        lightkit CLI's test after ``fit`` use) saves the weights with the lowest ``val_loss``."""
        cb = getattr(trainer, "checkpoint_callback", None)
        return (isinstance(cb, ModelCheckpoint) and cb.monitor == self.val_loss and cb.mode == "min"
                and cb.save_top_k != 0)

    def _warn(self, kind: DiagnosisKind, step: int, message: str, layers: list[str] | None = None,
              note: bool = False) -> None:
        """Record a finding and warn (``note``: an info line: the run already handles it)."""
        last = self.last_warned.get(kind)
        if last is not None and step - last < self.warn_every_n_steps:
            return
        self.last_warned[kind] = step
        self.findings.append(Finding(kind, step, message, list(layers or [])))
        (rank_zero_info if note else rank_zero_warn)(message)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        pending = (to_host([torch.stack([t.to(self._pending[0][1].device) for _, t in self._pending])])[0]
                   if self._pending else [])
        return {
            "findings": [asdict(f) for f in self.findings],
            "last_warned": dict(self.last_warned),
            "initial": list(self.initial),
            "recent": list(self.recent),
            "seen": self.seen,
            "since_eval": list(self.since_eval),
            "eval_train": list(self.eval_train),
            "eval_val": list(self.eval_val),
            "eval_lr": list(self.eval_lr),
            "nonfinite_step": self.nonfinite_step,
            "nonfinite_value": self.nonfinite_value,
            "divergence": self.divergence,
            "checkpoint_steps": list(self.checkpoint_steps),
            "last_checked": self.last_checked,
            "last_mixed": self.last_mixed,
            "pending": [[s, v] for (s, _), v in zip(self._pending, pending, strict=True)],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._reset()
        self.findings = [Finding(**f) for f in state_dict["findings"]]
        self.last_warned = {str(k): int(v) for k, v in state_dict["last_warned"].items()}
        self.initial = [float(v) for v in state_dict["initial"]]
        self.recent = deque((float(v) for v in state_dict["recent"]), maxlen=self.window)
        self.seen = int(state_dict["seen"])
        self.since_eval = [float(state_dict["since_eval"][0]), int(state_dict["since_eval"][1])]
        self.eval_train = [float(v) for v in state_dict["eval_train"]]
        self.eval_val = [float(v) for v in state_dict["eval_val"]]
        self.eval_lr = [float(v) for v in state_dict.get("eval_lr", [math.nan] * len(self.eval_val))]
        self.nonfinite_step = state_dict["nonfinite_step"]
        self.nonfinite_value = state_dict["nonfinite_value"]
        self.divergence = str(state_dict.get("divergence", "nonfinite_loss"))
        self.checkpoint_steps = [int(s) for s in state_dict["checkpoint_steps"]]
        self.last_checked = int(state_dict["last_checked"])
        self.last_mixed = int(state_dict.get("last_mixed", -1))
        self._pending = [(int(s), torch.tensor(float(v))) for s, v in state_dict["pending"]]
