"""``fit --ensemble N``: train N models of one config, one after another, and test the mean of their softmax.

On a few hundred images two fits of one recipe that differ only in their seed disagree on 1-2 % of the test
images, and the average of three such fits beats the typical single one by about a point
(``benchmarks/RESULTS.md``, "Recipe tuning", ensembles). Member 0 is the command's own fit; members 1..N-1 are
the same command line run as subprocesses, each with ``seed_everything`` + i, in ``<run folder>/member_<i>/``.
The data split stays member 0's: when the data module's seed decides the split, every member gets
``--data.init_args.seed`` of member 0 (the members then also share the order of the batches).

A member that finished (its ``member.json`` written after exit 0, with the same command) is reused by a rerun;
one that was killed resumes from its ``last.ckpt``. So ``fit ... --ckpt_path last`` after a kill completes the
ensemble without retraining what was done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lightkit.edge import RunFailed, UsageError
from lightkit.runs import _RUN_ENV

__all__ = ["AUTO_MAX_TRAIN", "AUTO_MEMBERS", "ensemble_size", "member_command", "split_is_seeded", "train_members",
           "train_size"]

AUTO_MEMBERS = 3
AUTO_MAX_TRAIN = 1000  # train images; above it one fit has enough data, and N fits cost N times as much


def check_ensemble_value(value: Any) -> None:
    """``--ensemble``: an integer >= 1 or ``auto``.

    Raises:
        UsageError: anything else.
    """
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return
    raise UsageError(f"ensemble={value!r}: give the number of models to train and average (an integer >= 1; 1 is "
                     f"one model) or auto ({AUTO_MEMBERS} on a train split of at most {AUTO_MAX_TRAIN:,} images).")


def ensemble_size(value: int | str, n_train: int | None, world_size: int) -> tuple[int, str]:
    """How many models ``--ensemble value`` trains after member 0's fit, and a line saying why (``auto``).

    Args:
        value: the ``--ensemble`` setting.
        n_train: images in the train split (None: unknown, a streaming dataset).
        world_size: processes of the fit.

    Raises:
        UsageError: an integer >= 2 on more than one process.
    """
    check_ensemble_value(value)
    if value != "auto":
        if value > 1 and world_size > 1:
            raise UsageError(f"ensemble={value} trains its members one after another in one process, and this fit runs "
                             f"on {world_size} processes: set trainer.devices=1, or --ensemble 1 (auto chooses 1 on "
                             f"several devices).")
        return int(value), ""
    if world_size > 1:
        return 1, f"ensemble auto: one model ({world_size} processes; members train in one process)"
    if n_train is None:
        return 1, "ensemble auto: one model (the train split has no length: a streaming dataset)"
    if n_train <= AUTO_MAX_TRAIN:
        return AUTO_MEMBERS, (f"ensemble auto: {n_train} training images (<= {AUTO_MAX_TRAIN:,}): training "
                              f"{AUTO_MEMBERS - 1} more models with the next seeds and testing the average of all "
                              f"{AUTO_MEMBERS} (about a point of accuracy on small folders; --ensemble 1 for one "
                              f"model)")
    return 1, f"ensemble auto: one model ({n_train} training images > {AUTO_MAX_TRAIN:,})"


def train_size(datamodule: Any) -> int | None:
    """Images in the train split: a lightkit data module's ``split_sizes``, else the length of its train loader's
    dataset; None when it has none (a streaming dataset without a length)."""
    try:
        sizes = getattr(datamodule, "split_sizes", None)
        if sizes is not None:
            return int(sizes()["train"])
        return len(datamodule.train_dataloader().dataset)
    except (AttributeError, TypeError, KeyError, NotImplementedError):
        return None


def split_is_seeded(datamodule: Any) -> bool:
    """Whether the data module's ``seed`` decides which images are train / val / test (a lightkit data module's
    ``seed_picks_split``). True when unknown and the module has a ``seed`` (the safe side: members then get member
    0's)."""
    picks = getattr(datamodule, "seed_picks_split", None)
    return bool(picks()) if picks is not None else hasattr(datamodule, "seed")


def member_command(argv: list[str], seed: int, index: int, folder: Path, data_seed: int | None) -> list[str]:
    """Member ``index``'s command line: the parent's, with its seed, folder and no test / baseline / summary. The
    parent's ``--ckpt_path`` (a resumed member 1) is left out, so a rerun that resumes recognises finished members."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    argv = kept
    extra = ["--ensemble", "1", "--seed_everything", str(seed + index), "--run_dir", str(folder),
             "--test_after_fit", "false", "--pixel_baseline", "false", "--sanity_first", "false",
             "--summary_json", str(folder / "member_summary.json"), "--ckpt_path", "null"]
    if data_seed is not None:
        extra += ["--data.init_args.seed", str(data_seed)]
    return [*argv, *extra]


def train_members(argv: list[str], seed: int, count: int, run: Path, data_seed: int | None,
                  say: Any = print) -> list[str]:
    """Train members 1..count-1 (or reuse / resume them) and return their best checkpoints, in order.

    Raises:
        RunFailed: a member's fit failed (its log's last line and path are in the message).
    """
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != _RUN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    ckpts = []
    for index in range(1, count):
        folder = run / f"member_{index}"
        command = member_command(argv, seed, index, folder, data_seed)
        done, summary = folder / "member.json", folder / "member_summary.json"
        record = json.loads(done.read_text()) if done.is_file() else {}
        if record.get("command") == command:
            best = record["checkpoint"]
            say(f"lightkit: ensemble member {index + 1} of {count} (seed {seed + index}): done before, reused ({best})")
            ckpts.append(best)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        last = folder / "checkpoints" / "last.ckpt"
        resume = ["--ckpt_path", str(last)] if last.is_file() else []
        log = folder / "fit.log"
        say(f"lightkit: ensemble member {index + 1} of {count} (seed {seed + index}): "
            f"{'resuming' if resume else 'training'}, log {log}")
        t0 = time.perf_counter()
        with log.open("a") as sink:
            code = subprocess.run([sys.executable, "-c", "from lightkit.cli import main; main()", *command, *resume],
                                  env=env, stdout=sink, stderr=subprocess.STDOUT).returncode
        if code != 0 or not summary.is_file():
            lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise RunFailed(f"ensemble member {index + 1} of {count} failed (exit {code}): {lines[-1].strip()} (log "
                            f"{log}); fix it and rerun the same command with --ckpt_path last to go on.")
        best = json.loads(summary.read_text()).get("checkpoint")
        if not best or not Path(best).is_file():
            raise RunFailed(f"ensemble member {index + 1} of {count} saved no checkpoint (log {log}); the ensemble "
                            f"needs each member's weights: keep a ModelCheckpoint in trainer.callbacks.")
        done.write_text(json.dumps({"command": command, "checkpoint": best}, indent=2))
        say(f"lightkit: ensemble member {index + 1} of {count} done in {time.perf_counter() - t0:.0f} s ({best})")
        ckpts.append(best)
    return ckpts
