"""Run folders: every command of the command line writes into a folder of its own, ``<root>/version_<N>``.

``root`` is ``trainer.default_root_dir`` when given, else the first logger's ``save_dir`` in the config,
else ``runs/<name of the first config file>``. Loggers, checkpoints, ``config.yaml``, plots and
predictions all go into the run folder, so no command overwrites another's files and every
subcommand works after any other. ``--ckpt_path last`` / ``best`` find the newest run of the same
root that has such a checkpoint; ``fit --ckpt_path last`` continues in that run's folder (same CSV
log, same W&B run id).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINT_KEYWORDS",
    "find_checkpoint",
    "new_run_dir",
    "place_run",
    "resolve_checkpoint_keyword",
    "run_root",
    "run_of_checkpoint",
    "versions",
    "wandb_run_id",
]

CHECKPOINT_KEYWORDS = ("last", "best")
_VERSION = re.compile(r"^version_(\d+)$")
_WANDB_RUN = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-([a-z0-9]+)$")


def versions(root: str | Path) -> list[tuple[int, Path]]:
    """The ``version_<N>`` folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return sorted(found)


def new_run_dir(root: str | Path) -> Path:
    """Create and return ``root/version_<N>`` with N one above the highest present (safe against a
    second command starting at the same moment: the folder is created exclusively)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    number = versions(root)[-1][0] + 1 if versions(root) else 0
    while True:
        path = root / f"version_{number}"
        try:
            path.mkdir()
        except FileExistsError:
            number += 1
            continue
        return path


def find_checkpoint(root: str | Path, keyword: str) -> Path:
    """The newest run's ``checkpoints/<keyword>.ckpt`` under ``root`` (``keyword``: ``last`` or ``best``).

    Raises:
        FileNotFoundError: no run under ``root`` has one; the message says where it looked and what to do.
    """
    if keyword not in CHECKPOINT_KEYWORDS:
        raise ValueError(f"ckpt_path={keyword!r}: the keywords are {', '.join(CHECKPOINT_KEYWORDS)}, or give a path.")
    for _, run in reversed(versions(root)):
        candidate = run / "checkpoints" / f"{keyword}.ckpt"
        if candidate.is_file():
            return candidate
    runs = len(versions(root))
    hint = ("save it with ModelCheckpoint(save_last: true)" if keyword == "last"
            else "save it with ModelCheckpoint(filename: best, monitor: val/loss)")
    raise FileNotFoundError(
        f"ckpt_path={keyword!r}: no run under {root} has checkpoints/{keyword}.ckpt ({runs} run folder(s) looked at); "
        f"{hint}, or give the checkpoint's path."
    )


def run_of_checkpoint(ckpt: str | Path) -> Path | None:
    """The run folder a checkpoint was written in (``<run>/checkpoints/x.ckpt``), if it is one."""
    ckpt = Path(ckpt)
    run = ckpt.parent.parent
    return run if ckpt.parent.name == "checkpoints" and _VERSION.match(run.name) else None


def wandb_run_id(run: str | Path) -> str | None:
    """The W&B run id of the newest W&B run written in ``run/wandb`` (offline or online), if any."""
    folder = Path(run) / "wandb"
    if not folder.is_dir():
        return None
    found = sorted((p.name, m.group(1)) for p in folder.iterdir() if (m := _WANDB_RUN.match(p.name)))
    return found[-1][1] if found else None


def external_launcher() -> bool:
    """True when torchrun or SLURM started this process as one of several (before Lightning launches any)."""
    return any(int(os.environ.get(key, "1") or 1) > 1 for key in ("WORLD_SIZE", "SLURM_NTASKS"))


def distributed_child() -> bool:
    """True in a process that a distributed launcher started as a non-zero rank."""
    return any(os.environ.get(key, "0") not in ("", "0") for key in ("LOCAL_RANK", "RANK", "NODE_RANK"))


def run_root(cfg: Any) -> Path:
    """Where the run folders of a config live (see the module docstring)."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("default_root_dir"):
        return _unversioned(Path(str(trainer["default_root_dir"])))
    for logger in _logger_configs(trainer.get("logger")):
        save_dir = (logger.get("init_args") or {}).get("save_dir")
        if save_dir:
            return _unversioned(Path(str(save_dir)))
    configs = [c for c in (cfg.get("config") or []) if c]
    name = Path(str(configs[0])).stem if configs else "lightkit"
    return Path("runs") / name


def _unversioned(path: Path) -> Path:
    """A run's own config.yaml names its run folder; its runs go next to it, not inside it."""
    return path.parent if _VERSION.match(path.name) else path


def _logger_configs(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if hasattr(item, "get") and item.get("class_path")]


def resolve_checkpoint_keyword(cfg: Any) -> str | None:
    """Replace ``cfg.ckpt_path`` ``last`` / ``best`` by the newest run's file (in ``run_dir`` when it is
    a path); returns the (resolved) ``ckpt_path``.

    Raises:
        FileNotFoundError: no run has that checkpoint.
    """
    ckpt = cfg.get("ckpt_path")
    if isinstance(ckpt, str) and ckpt in CHECKPOINT_KEYWORDS:
        value = str(cfg.get("run_dir") or "auto")
        explicit = Path(value) / "checkpoints" / f"{ckpt}.ckpt" if value != "auto" else None
        cfg.ckpt_path = ckpt = str(explicit if explicit is not None and explicit.is_file()
                                   else find_checkpoint(run_root(cfg), ckpt))
    return ckpt


def place_run(cfg: Any, subcommand: str | None) -> Path:
    """Resolve ``cfg.run_dir`` (``auto`` or a path) to a run folder and point every output of the
    parsed config at it: ``trainer.default_root_dir``, each logger's ``save_dir`` (CSV / TensorBoard
    logs directly in it), each ``ModelCheckpoint`` without a ``dirpath`` to ``<run>/checkpoints``.
    ``ckpt_path: last|best`` is resolved to the newest run's file; a fit resuming from a checkpoint of
    a run folder continues in that folder and its W&B run.

    Raises:
        FileNotFoundError: ``ckpt_path`` is ``last``/``best`` and no run has that checkpoint.
    """
    value = str(cfg.run_dir)
    root = run_root(cfg)
    ckpt = resolve_checkpoint_keyword(cfg)
    resumed = run_of_checkpoint(ckpt) if subcommand == "fit" and ckpt else None
    inherited = os.environ.get(_RUN_ENV)
    if value != "auto":
        run = Path(value)
        run.mkdir(parents=True, exist_ok=True)
    elif distributed_child() and inherited:
        run = Path(inherited)  # a DDP rank started by rank zero's launcher: rank zero chose the folder
    elif distributed_child() or external_launcher():
        run = root  # started by torchrun / SLURM on every rank at once: no rank can number a folder alone
        run.mkdir(parents=True, exist_ok=True)
    elif resumed is not None:
        run = resumed
    else:
        run = new_run_dir(root)
    os.environ[_RUN_ENV] = str(run)
    cfg.trainer.default_root_dir = str(run)
    resume_id = wandb_run_id(run) if resumed is not None else None
    for logger in _logger_configs(cfg.trainer.get("logger")):
        init = logger.get("init_args")
        if init is None:
            continue
        init["save_dir"] = str(run)
        name = str(logger["class_path"]).rsplit(".", 1)[-1]
        if name in ("CSVLogger", "TensorBoardLogger"):
            init["name"], init["version"] = "", ""
        if name == "WandbLogger" and resume_id is not None and "id" in init:
            init["id"] = resume_id
    for section in ("plot_schedule", "show_augmentations", "sanity", "lr_find"):
        options = cfg.get(section)
        output = options.get("output") if hasattr(options, "get") else None
        if isinstance(output, str) and not Path(output).is_absolute():
            options["output"] = str(run / output)  # a command's own file goes into the run folder too
    callbacks = cfg.trainer.get("callbacks")
    if subcommand != "fit" and isinstance(callbacks, list):
        # Only a fit writes checkpoints: `last` must never find the scratch weights of lr_find's sweep.
        cfg.trainer["callbacks"] = [c for c in callbacks
                                    if not str(getattr(c, "class_path", "")).endswith("ModelCheckpoint")]
        cfg.trainer["enable_checkpointing"] = False
    for callback in _logger_configs(cfg.trainer.get("callbacks")):
        init = callback.get("init_args")
        if str(callback["class_path"]).endswith("ModelCheckpoint") and init is not None and (
                not init.get("dirpath") or run_of_checkpoint(Path(str(init["dirpath"])) / "x.ckpt") is not None):
            init["dirpath"] = str(run / "checkpoints")  # unset, or another run's (from its saved config.yaml)
    return run


_RUN_ENV = "LIGHTKIT_RUN_DIR"
