"""``LRRangeTest``: the LR range test (Smith 2017, arXiv:1506.01186; fastai ``lr_find``) run before
training."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightkit.callbacks._monitor import PAUSE_MONITOR_FLAG, log_image, new_figure, save_figure, step_loss
from lightkit.callbacks.mixing import PAUSE_FLAG
from lightkit.functional.diagnose import LIGHTKIT_TERMS, terms_for
from lightkit.functional.lr_suggest import (
    SKIP_START,
    SUGGESTIONS,
    BiasCorrectedEMA,
    Suggestion,
    SweepEdgeWarning,
    SweepMode,
    clr_bounds,
    diverged,
    filter_losses,
    range_test_lr,
    suggest,
)
from lightkit.restore import restored

__all__ = ["LRRangeTest", "LR_OVERRIDE"]

LR_OVERRIDE = "--model.init_args.optimizer.init_args.lr"
"""The CLI option the printed override sets (the optimizer's default LR, which the head group uses)."""

# Keys of a param group that hold (parts of) its LR schedule; all are scaled when a suggestion is applied.
_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


class LRRangeTest(Callback):
    """Sweep the LR over a few optimizer steps, suggest one, and put everything back exactly.

    Smith's range test (arXiv:1506.01186, sec. 3.3) as fastai's ``lr_find`` runs it: at the start of
    training the callback trains ``num_steps`` batches with the LR rising from ``start_lr`` to
    ``end_lr``, smooths the loss (bias-corrected EMA), stops when it diverges, and reports
    ``robust_valley`` (the default: where the median-filtered loss has done 75 % of its fall, the
    noisy first 10 % of the sweep skipped), fastai's ``valley`` / ``minimum`` (on the EMA curve),
    ``steepest`` and Smith's CLR bounds (on the filtered curve, :mod:`lightkit.functional.lr_suggest`).
    An answer at an edge of the usable sweep is reported with a
    :class:`~lightkit.functional.lr_suggest.SweepEdgeWarning` naming the value and the fix (lower
    ``start_lr``, more ``num_steps``, higher ``end_lr``); the messages are kept in ``results["warnings"]``.
    Then model weights, BN statistics, optimizer and scheduler state, RNG states (torch, CUDA, numpy,
    python, the loader's generators) and the metric states are restored, so the fit that follows is
    bit-identical to one without the sweep (unless ``apply`` changes its LR).

    Group-aware: the swept LR is the head group's; every other optimizer group keeps its ratio to
    the head (discriminative LRs survive, a frozen group at LR 0 stays at 0), or with ``group`` only
    that layer group is swept and the others hold still. ``apply`` writes the suggestion back per
    group, scaling each group's whole schedule (``lr``, ``initial_lr``, ``max_lr``, ``min_lr`` and the
    schedulers' ``base_lrs``). Mixing augmentations and monitoring are paused during the sweep.

    Under DDP the loss is averaged over ranks before smoothing and the gradients are all-reduced, so
    every rank takes the same steps and reaches the same suggestion. Output (rank zero): a PNG at
    ``<log_dir or default_root_dir>/lr_find.png`` (y-axis clipped to the curve, raw-loss spikes left
    out; each suggestion labelled with its value), the W&B image ``lr_find/plot``, a table and the
    ``--model.init_args.optimizer.init_args.lr=`` override. A resumed fit does not sweep again.

    Args:
        start_lr: head-group LR of the first sweep step.
        end_lr: head-group LR of the last sweep step.
        num_steps: optimizer steps of the sweep (a loader shorter than that is cycled, with a warning).
        mode: ``exponential`` (log-spaced, default) or ``linear`` spacing of the LRs.
        smoothing: EMA coefficient beta of the loss, per step, in [0, 1).
        diverge_factor: stop when the smoothed loss exceeds this multiple of the best smoothed loss.
        suggestion: the rule used for ``apply`` and the printed override; ``robust_valley`` landed in
            the good LR band on 12/12 benchmark sweeps, fastai's ``valley`` on 5/12
            (``benchmarks/lr_grid.py``, ``benchmarks/RESULTS.md``).
        group: sweep only this layer group (an optimizer group's ``group`` or ``name`` key); None
            sweeps all groups keeping their ratios to the head.
        apply: write the suggestion into the optimizer for the fit that follows.
        stop_after: stop the fit after the sweep (what ``python cli.py lr_find`` uses).

    Raises:
        ValueError: bad arguments; at ``on_train_start`` a model with no trainable parameters, more
            than one optimizer, an unknown ``group``, or a head group with LR 0.
        RuntimeError: the loss is NaN/Inf at the first step, or the sweep diverged too early for a
            suggestion.
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_steps: int = 100,
        mode: SweepMode = "exponential",
        smoothing: float = 0.98,
        diverge_factor: float = 4.0,
        suggestion: Suggestion = "robust_valley",
        group: str | None = None,
        apply: bool = False,
        stop_after: bool = False,
    ) -> None:
        if not 0.0 < start_lr < end_lr or not math.isfinite(end_lr):
            raise ValueError(
                f"LRRangeTest: need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}; "
                f"the defaults are 1e-7 and 10."
            )
        if num_steps < 2:
            raise ValueError(f"LRRangeTest: num_steps={num_steps} must be >= 2 (100 is typical).")
        if mode not in ("exponential", "linear"):
            raise ValueError(f"LRRangeTest: mode={mode!r}; choose 'exponential' or 'linear'.")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"LRRangeTest: smoothing={smoothing} must be in [0, 1) (0.98 is fastai's).")
        if not diverge_factor > 1.0:
            raise ValueError(f"LRRangeTest: diverge_factor={diverge_factor} must be > 1 (4 is typical).")
        if suggestion not in SUGGESTIONS:
            raise ValueError(f"LRRangeTest: suggestion={suggestion!r}; choose one of {list(SUGGESTIONS)}.")
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_steps = num_steps
        self.mode = mode
        self.smoothing = smoothing
        self.diverge_factor = diverge_factor
        self.suggestion = suggestion
        self.group = group
        self.apply = apply
        self.stop_after = stop_after
        self.results: dict[str, Any] | None = None
        self._resumed = False

    # -- hooks -------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Here the optimizer exists, a checkpoint has been restored, DDP has wrapped the model and
        # the train loader (with its distributed sampler) is set up.
        if self._resumed:  # the results came from the checkpoint; the optimizer already holds them
            self._resumed = False
        else:
            optimizer = self._optimizer(trainer)
            ratios = self._ratios(optimizer)
            record = self._sweep(trainer, pl_module, optimizer, ratios)
            self.results = self._suggest(record, optimizer, ratios)
            if self.apply:
                self._apply(trainer, optimizer)
            self._report(trainer)
        if self.stop_after:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"results": copy.deepcopy(self.results)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results = copy.deepcopy(state_dict.get("results"))
        self._resumed = self.results is not None

    # -- setup -------------------------------------------------------------------------------
    def _optimizer(self, trainer: Trainer) -> torch.optim.Optimizer:
        if len(trainer.optimizers) != 1:
            raise ValueError(
                f"LRRangeTest: the model has {len(trainer.optimizers)} optimizers; the range test needs "
                f"exactly one (return a single optimizer from configure_optimizers)."
            )
        optimizer = trainer.optimizers[0]
        if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
            raise ValueError(
                "LRRangeTest: no trainable parameters (every requires_grad is False); unfreeze a layer "
                "group before the LR range test."
            )
        return optimizer

    def _ratios(self, optimizer: torch.optim.Optimizer) -> list[float]:
        """Each optimizer group's LR as a multiple of the swept LR."""
        groups = optimizer.param_groups
        if self.group is not None:
            labels = sorted(
                {str(g.get(k)) for g in groups for k in ("group", "name") if g.get(k) is not None}
            )
            chosen = [self.group in (g.get("group"), g.get("name")) for g in groups]
            if not any(chosen):
                raise ValueError(f"LRRangeTest: group={self.group!r} is not an optimizer group; choose one "
                                 f"of {labels}.")
            refs = [_reference_lr(g) for g in groups]
            top = max(r for r, c in zip(refs, chosen, strict=True) if c)
            # Inside the named group the ratios of its decay / no-decay parts are kept.
            return [
                r / top if c and top > 0 else (1.0 if c else 0.0) for r, c in zip(refs, chosen, strict=True)
            ]
        heads = [g for g in groups if g.get("group") == "head" or g.get("name") == "head"] or [groups[-1]]
        head_lr = _reference_lr(heads[0])
        if head_lr <= 0:
            raise ValueError(
                f"LRRangeTest: the head group's LR is {head_lr}, so the other groups' ratios to it are "
                f"undefined; give the head a positive LR or sweep one group with `group`."
            )
        return [_reference_lr(g) / head_lr for g in groups]

    # -- sweep -------------------------------------------------------------------------------
    def _sweep(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
    ) -> dict[str, list[float]]:
        flags = {name: getattr(pl_module, name, None) for name in (PAUSE_FLAG, PAUSE_MONITOR_FLAG)}
        with restored(trainer, pl_module, optimizer):
            for name in flags:
                setattr(pl_module, name, True)
            try:
                return self._loop(trainer, pl_module, optimizer, ratios)
            finally:
                for name, value in flags.items():
                    if value is None:
                        delattr(pl_module, name)
                    else:
                        setattr(pl_module, name, value)

    def _loop(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        optimizer: torch.optim.Optimizer,
        ratios: list[float],
    ) -> dict[str, list[float]]:
        lrs: list[float] = []
        losses: list[float] = []
        smoothed: list[float] = []
        ema = BiasCorrectedEMA(self.smoothing)  # one update per step: O(n) over the sweep, not O(n^2)
        best = math.inf
        batches = self._batches(trainer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        for step in range(self.num_steps):
            lr = range_test_lr(step / (self.num_steps - 1), self.start_lr, self.end_lr, self.mode)
            for g, ratio in zip(optimizer.param_groups, ratios, strict=True):
                g["lr"] = lr * ratio
            batch = trainer.strategy.batch_to_device(next(batches), pl_module.device)
            optimizer.zero_grad(set_to_none=True)
            with trainer.strategy.precision_plugin.train_step_context(), _detached(pl_module):
                loss = step_loss(pl_module.training_step(batch, step))
            if loss is None:
                raise RuntimeError(
                    "LRRangeTest: training_step returned no loss (a tensor or a dict with 'loss'); the range "
                    "test needs one."
                )
            loss.backward()
            _all_reduce_grads(trainer, params)
            value = float(trainer.strategy.reduce(loss.detach(), reduce_op="mean"))
            if not math.isfinite(value):
                if step == 0:
                    raise RuntimeError(
                        f"LRRangeTest: the loss is {value} at the first step (lr={lr:.3g}); lower start_lr "
                        f"(e.g. {self.start_lr / 100:.0e}) or check the model and data."
                    )
                break
            optimizer.step()
            lrs.append(lr)
            losses.append(value)
            smoothed.append(ema.update(value))
            best = min(best, smoothed[-1])
            if diverged(smoothed[-1], best, self.diverge_factor):
                break
        optimizer.zero_grad(set_to_none=True)
        return {"lrs": lrs, "losses": losses, "smoothed": smoothed}

    def _batches(self, trainer: Trainer) -> Iterator[Any]:
        """Batches of the fit's own train loader (its sampler included), cycled if it is too short."""
        loader = trainer.train_dataloader
        count = 0
        passes = 0
        while True:
            seen = 0
            for batch in loader:
                seen += 1
                count += 1
                yield batch
            if seen == 0:
                raise ValueError("LRRangeTest: the train loader is empty; the range test needs batches.")
            passes += 1
            if passes == 1:  # once per sweep, not once per pass over a 2-batch loader
                # Expected on a small folder (the user-folder recipe sweeps 100 steps over 2-5 batches, and its
                # suggestions were as good as any fixed LR there), so a fact, not a warning.
                rank_zero_info(
                    f"LRRangeTest: the train loader has {seen} batches, fewer than num_steps={self.num_steps}; "
                    f"the sweep cycles them (up to {-(-self.num_steps // seen)} passes)."
                )

    # -- results -----------------------------------------------------------------------------
    def _suggest(
        self, record: dict[str, list[float]], optimizer: torch.optim.Optimizer, ratios: list[float]
    ) -> dict[str, Any]:
        lrs, raw, smoothed = record["lrs"], record["losses"], record["smoothed"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SweepEdgeWarning)
            try:
                suggestions = suggest(lrs, smoothed, raw=raw)
            except ValueError as err:
                raise RuntimeError(
                    f"LRRangeTest: {len(lrs)} usable sweep steps are too few for a suggestion ({err}). Lower "
                    "end_lr, "
                    f"raise diverge_factor or num_steps."
                ) from err
            filtered = filter_losses(raw)
            try:
                base_lr, max_lr = clr_bounds(lrs, filtered)
                clr: dict[str, float] | None = {"base_lr": base_lr, "max_lr": max_lr}
            except ValueError:
                clr = None
        notes = []
        for w in caught:  # the pure functions warn; here they become rank-zero warnings
            if issubclass(w.category, SweepEdgeWarning):
                notes.append(str(w.message))
                rank_zero_warn(f"LRRangeTest: {w.message}", category=SweepEdgeWarning)
            else:  # pragma: no cover - the rules raise no other warning
                warnings.warn(w.message, w.category, stacklevel=2)
        lr = suggestions[self.suggestion]
        names = [str(g.get("name", i)) for i, g in enumerate(optimizer.param_groups)]
        group_lrs = {
            n: (lr * r if r > 0 else _reference_lr(g))
            for n, r, g in zip(names, ratios, optimizer.param_groups, strict=True)
        }
        return {
            **record,
            "filtered": filtered,
            "suggestions": suggestions,
            "clr": clr,
            "suggestion": self.suggestion,
            "lr": lr,
            "group_lrs": group_lrs,
            "group": self.group,
            "warnings": notes,
        }

    def _apply(self, trainer: Trainer, optimizer: torch.optim.Optimizer) -> None:
        assert self.results is not None  # set just before; not user input
        factors: list[float | None] = []  # None: the group had LR 0, its schedule is set, not scaled
        for i, g in enumerate(optimizer.param_groups):
            ref = _reference_lr(g)
            target = self.results["group_lrs"][str(g.get("name", i))]
            factors.append(target / ref if ref > 0 else None)
            for key in _LR_KEYS:
                if isinstance(g.get(key), (int, float)):
                    g[key] = _scaled(g[key], factors[-1], target)
        for config in trainer.lr_scheduler_configs:
            base = getattr(config.scheduler, "base_lrs", None)
            if isinstance(base, list) and len(base) == len(factors):
                targets = list(self.results["group_lrs"].values())
                config.scheduler.base_lrs = [
                    _scaled(b, f, t) for b, f, t in zip(base, factors, targets, strict=True)
                ]

    def _report(self, trainer: Trainer) -> None:
        assert self.results is not None
        path = (
            Path(trainer.log_dir or trainer.default_root_dir) / "lr_find.png"
        )  # log_dir broadcasts: all ranks
        if not trainer.is_global_zero:
            return
        res = self.results
        save_figure(_figure(res), path)
        log_image(trainer, "lr_find/plot", path, step=trainer.global_step)
        res["plot"] = str(path)
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"LR range test ({len(res['lrs'])} steps)")
        table.add_column("rule")
        table.add_column("lr", justify="right")
        for name, value in res["suggestions"].items():
            table.add_row(name + (" (chosen)" if name == res["suggestion"] else ""), f"{value:.3g}")
        if res["clr"]:
            table.add_row("clr base_lr / max_lr", f"{res['clr']['base_lr']:.3g} / {res['clr']['max_lr']:.3g}")
        for name, value in res["group_lrs"].items():
            table.add_row(f"group {name}", f"{value:.3g}")
        console = Console(width=120)
        console.print(table)
        if terms_for(trainer.lightning_module) is LIGHTKIT_TERMS:  # a config key sets the LR
            how = f"{LR_OVERRIDE}={res['lr']:.3g}"
        else:  # a LightningModule lightkit did not write has no lightkit config keys
            how = f"lr={res['lr']:.3g} in your configure_optimizers" + ("" if self.apply else
                                                                        " (or LRRangeTest(apply=True))")
        console.print(f"LRRangeTest: plot -> {path}\nto use the suggestion: {how}"
                      + (" (applied to this fit)" if self.apply else ""), markup=False, highlight=False)


def _scaled(value: float, factor: float | None, target: float) -> float:
    return target if factor is None else value * factor


def _reference_lr(group: dict[str, Any]) -> float:
    """A group's LR as configured: a scheduler's ``max_lr`` / ``initial_lr`` if present, else ``lr``."""
    for key in ("max_lr", "initial_lr", "lr"):
        if isinstance(group.get(key), (int, float)):
            return float(group[key])
    return 0.0


def _all_reduce_grads(trainer: Trainer, params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks in one collective (the sweep calls the unwrapped module, so DDP does
    not)."""
    if trainer.world_size <= 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class _detached:
    """Run ``training_step`` with the module detached from the trainer.

    Its ``self.log`` calls then go nowhere (Lightning allows that, with a warning we silence) instead
    of being refused in ``on_train_start`` or mixed into the fit's epoch metrics. Uses the public
    ``LightningModule.trainer`` setter; the one place this file touches the module-trainer link.
    """

    def __init__(self, pl_module: LightningModule) -> None:
        self.pl_module = pl_module
        self.catch = warnings.catch_warnings()

    def __enter__(self) -> None:
        self.trainer = self.pl_module.trainer
        self.catch.__enter__()
        warnings.filterwarnings("ignore", message=r".*self\.log.*")
        self.pl_module.trainer = None  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        self.pl_module.trainer = self.trainer
        self.catch.__exit__(*exc)


def _ylim(res: dict[str, Any]) -> tuple[float, float]:
    """Y-limits that the useful curve fills: from just below the lowest smoothed loss to twice its drop above
    it.

    Raw losses spike (to 18-60 from ~2.3 at the divergence, or at a fresh model's first steps, issue
    16); autoscaling to them squeezed the curve into the bottom 5-15 % of the plot. The top is the
    highest filtered loss before the minimum (the plateau, the noisy start skipped) plus the drop
    once more, so the turn into divergence stays visible; never above the highest point drawn.
    """
    filtered, smoothed, raw = res["filtered"], res["smoothed"], res["losses"]
    skip = min(math.ceil(SKIP_START * len(filtered)), len(filtered) - 1)
    low = min(range(skip, len(filtered)), key=filtered.__getitem__)
    bottom = min(min(filtered[skip:]), min(smoothed[skip:]))
    plateau = max(filtered[skip:low + 1])
    top = min(plateau + max(plateau - bottom, 0.1 * abs(plateau)), max(max(raw), max(smoothed)))
    top = max(top, bottom + 1e-6 * max(1.0, abs(bottom)))  # a flat curve still gets a non-empty range
    return bottom - 0.05 * (top - bottom), top


def _figure(res: dict[str, Any]) -> Any:
    fig = new_figure(6.0, 4.0, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(res["lrs"], res["losses"], color="0.75", lw=1, label="loss")
    ax.plot(res["lrs"], res["smoothed"], color="C0", lw=1, ls=":", label="EMA (valley, minimum)")
    ax.plot(res["lrs"], res["filtered"], color="C0", lw=2, label="median-filtered (robust_valley, steepest)")
    bottom, top = _ylim(res)
    ax.set_ylim(bottom, top)
    index = {lr: i for i, lr in enumerate(res["lrs"])}
    for k, (name, lr) in enumerate(res["suggestions"].items()):
        chosen = name == res["suggestion"]
        ax.axvline(
            lr,
            color=f"C{k + 1}",
            ls="-" if chosen else "--",
            lw=1.5 if chosen else 1,
            label=f"{name} {lr:.2g}",
        )
        ax.annotate(
            f"{name} {lr:.2g}",
            (lr, top),
            xytext=(3, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=7,
            color=f"C{k + 1}",
            fontweight="bold" if chosen else "normal",
        )
        if lr in index:
            ax.plot([lr], [res["filtered"][index[lr]]], "o", color=f"C{k + 1}")
    if res["clr"]:
        ax.axvspan(res["clr"]["base_lr"], res["clr"]["max_lr"], color="C0", alpha=0.08, label="CLR bounds")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (head group)")
    ax.set_ylabel("training loss (y clipped to the curve)")
    ax.set_title(f"LR range test: {res['suggestion']} = {res['lr']:.3g}")
    ax.legend(fontsize=7, loc="lower left")
    return fig
