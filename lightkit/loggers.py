"""A W&B logger that is offline unless asked otherwise and never waits on a missing network."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

from lightkit.models.encoder import hub_reachable

__all__ = ["WandbLogger", "flat_config"]

WANDB_HOST = "api.wandb.ai"


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with safe defaults for machines without a network.

    - ``offline=None`` (default) means offline unless ``WANDB_MODE=online`` is set; the run is written
      to ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``.
    - Online is only attempted when ``api.wandb.ai`` answers within ``probe_timeout`` seconds;
      otherwise the logger falls back to offline with a warning instead of hanging ~100 s.
    - ``WANDB_MODE=disabled`` is honoured (Lightning's logger would silently turn it into dryrun).
    - W&B's error-reporting probe at exit (about 10 s on a network that drops packets) is turned off
      unless the user set ``WANDB_ERROR_REPORTING`` themselves.

    Args:
        project: W&B project name.
        name: run name (default: W&B's generated name).
        save_dir: folder the run files go in.
        offline: True/False to force; None to follow ``WANDB_MODE`` (offline by default).
        log_model: upload checkpoints as artifacts (online only; W&B refuses it offline).
        group: W&B run group.
        tags: W&B run tags.
        probe_timeout: seconds to wait for the W&B server before going offline.
        id: W&B run id to write into (``resume="allow"``: continues that run); the lightkit CLI sets it when
            a fit resumes from a checkpoint of a run folder that holds a W&B run.
        reuse_active_run: when a W&B run is already open in this process (``wandb.init()`` called by
            you, or a run an earlier fit left open), log into it (Lightning's behaviour, default); with
            False the open run is finished, with a warning, and this logger writes a run of its own (what
            a search needs: one run per trial).
    """

    def __init__(
        self,
        project: str = "lightkit",
        name: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        log_model: bool = False,
        group: str | None = None,
        tags: list[str] | None = None,
        probe_timeout: float = 3.0,
        reuse_active_run: bool = True,
        id: str | None = None,  # noqa: A002 - W&B's and Lightning's name for it
    ) -> None:
        mode_env = os.environ.get("WANDB_MODE", "").lower()
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        if offline is None:
            offline = mode_env != "online"
        if not offline and not hub_reachable(WANDB_HOST, timeout=probe_timeout):
            rank_zero_warn(f"lightkit WandbLogger: {WANDB_HOST} unreachable; "
                           "logging offline (upload later with `wandb sync`).")
            offline = True
        if offline and log_model:
            rank_zero_warn("lightkit WandbLogger: log_model needs an online run; checkpoints stay on disk only.")
            log_model = False
        extra: dict[str, Any] = {}
        if mode_env == "disabled":
            extra["mode"] = "disabled"
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model,
            group=group, tags=tags, id=id, **extra,
        )
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # W&B warns that the setting has no effect
        self._reuse_active_run = reuse_active_run

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The W&B run (created on first use); see ``reuse_active_run`` for an already open run."""
        if self._experiment is None and not self._reuse_active_run:
            import wandb

            active = wandb.run
            if active is not None:
                rank_zero_warn(f"lightkit WandbLogger: the W&B run {active.name!r} was still open; it is finished so "
                               f"that this logger writes a run of its own ({self._wandb_init.get('name')!r}).")
                active.finish()
        return _LightningWandbLogger.experiment.fget(self)


def flat_config(config: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """A resolved LightningCLI config as flat ``a.b.c`` keys, so W&B runs compare by ``optimizer.lr``.

    ``class_path`` becomes the value of its key (``optimizer: torch.optim.AdamW``) and ``init_args``
    disappears from the keys; the model's optimizer and scheduler are lifted to the top
    (``optimizer.lr``, ``lr_scheduler.max_lr``), callbacks are keyed by class name
    (``callbacks.ModelCheckpoint.monitor``, a second one ``callbacks.ModelCheckpoint_2``), loggers are left out;
    ``lightkit_version`` is added.
    """
    flat: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and "class_path" in value:
            flat[prefix] = value["class_path"]
            for key, item in (value.get("init_args") or {}).items():
                put(f"{prefix}.{key}", item)
            for key, item in (value.get("dict_kwargs") or {}).items():
                put(f"{prefix}.{key}", item)
        elif isinstance(value, dict):
            for key, item in value.items():
                put(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "class_path" in v for v in value):
            seen: dict[str, int] = {}
            for item in value:  # by class name; a second one of a class is Name_2, ...
                name = str(item["class_path"]).rsplit(".", 1)[-1]
                seen[name] = seen.get(name, 0) + 1
                put(f"{prefix}.{name}" + (f"_{seen[name]}" if seen[name] > 1 else ""), item)
        else:
            flat[prefix] = value if isinstance(value, int | float | str | bool) or value is None else str(value)

    config = dict(config)
    config.pop("config", None)
    model = dict(config.get("model") or {})
    init = dict(model.get("init_args") or {})
    for part in ("optimizer", "lr_scheduler"):
        if part in init:
            put(part, init.pop(part))
    if model:
        model["init_args"] = init
        put("model", model)
    trainer = dict(config.get("trainer") or {})
    trainer.pop("logger", None)
    put("callbacks", trainer.pop("callbacks", None) or {})
    put("trainer", trainer)
    for key, value in config.items():
        if key not in ("model", "trainer"):
            put(key, value)
    if version is not None:
        flat["lightkit_version"] = version
    return flat
