"""Data at scale (issue 20): in-memory vs streaming vs LitData shards on JPEG folders of 1k-50k images.

Folders: 256 px JPEG crops of scikit-image's bundled photos (17 photos = 17 classes), generated once
(``--generate``) into ``--dir`` as ``n50000/<class>/*.jpg``; smaller sizes are folders of symlinks to
the first images of each class. Each (arm, size) runs in a fresh process that reports:

- ``first_batch_s``: from building the data module to the first train batch (setup, splits, workers);
- ``img_per_s``: train-loader images per second over ``--max_images`` images (2 workers by default;
  loader only, every batch touched), after the first batch;
- ``peak_rss_gb``: peak resident memory of the process and all its children (workers), sampled
  every 50 ms from /proc as PSS (shared pages of forked workers counted once, not once per worker);
- ``fit`` arm: a real ``Trainer.fit`` (resnet10t, folder recipe input 32 px, streaming): seconds from
  the start of the process to the end of the first optimizer step, and peak RSS over ``--fit_steps`` steps.
- ``recipe`` arm: the README's literal user command, ``cli.py fit --config configs/folder.yaml
  --data.init_args.root FOLDER`` in a fresh working directory, cut to ``--fit_steps`` training steps
  (``--trainer.max_steps``; 20 val / test batches): its LR range test, test and pixel baseline all run.
  Whole-command seconds, the pixel baseline's seconds and test images, peak memory of the process tree.

Arms: ``memory`` (in_memory: true), ``stream`` (in_memory: false), ``shards`` (``prepare`` once, timed
apart, then ``ShardDataModule``), ``fit``, ``recipe``. The in-memory arm is skipped above ``--memory_max`` images
(5k images at 224 px took 5.3 GB; 50k would need ~53 GB on a 24 GB box): recorded as skipped.

    python benchmarks/data_scale.py --generate 50000
    python benchmarks/data_scale.py --sizes 1000 5000 --arms memory stream shards
    python benchmarks/data_scale.py --sizes 50000 --arms stream shards fit
    python benchmarks/data_scale.py --sizes 50000 --arms recipe
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

T0 = time.perf_counter()


def _tree_pss_bytes(pid: int) -> int:
    """Proportional set size (PSS) of ``pid`` and all its descendants, from /proc: forked workers share
    the parent's pages, which a sum of RSS would count once per worker; PSS splits them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, ValueError, StopIteration):
            pass
        stack += children.get(p, [])
    return total


class PeakRSS:
    """Samples the process tree's memory (PSS) every ``interval`` seconds in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.05) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_pss_bytes(os.getpid()))
            time.sleep(interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def generate(n: int, out_dir: Path) -> Path:
    """``n`` JPEGs (256 px random crops of scikit-image's bundled photos, seeded) in class folders."""
    import numpy as np
    import skimage.data as skdata
    from PIL import Image

    out = out_dir / f"n{n}"
    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "stereo_motorcycle",
                 "colorwheel", "logo", "cat", "retina", "immunohistochemistry", "hubble_deep_field", "brick",
                 "grass", "gravel"):
        img = getattr(skdata, name)()
        img = np.asarray(img[0] if isinstance(img, tuple) else img)
        photos[name] = (np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img)[..., :3]
    rng = np.random.default_rng(0)
    keys = sorted(photos)
    for k in keys:
        (out / k).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = keys[i % len(keys)]
        img = photos[k]
        h, w = img.shape[:2]
        s = int(rng.integers(160, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(img[y:y + s, x:x + s]).resize((256, 256), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(out / k / f"{i:06d}.jpg", quality=90)
    return out


def subset(n: int, out_dir: Path, full: int = 50000) -> Path:
    """A folder of ``n`` images: symlinks to the first ``n / classes`` images of each class of the full set."""
    src, dst = out_dir / f"n{full}", out_dir / f"n{n}"
    if dst.is_dir():
        return dst
    classes = sorted(p for p in src.iterdir() if p.is_dir())
    per = n // len(classes)
    for c in classes:
        (dst / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[:per]:
            (dst / c.name / f.name).symlink_to(f)
    return dst


def _loader_run(dm, max_images: int) -> dict:
    t_build = time.perf_counter()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    first = next(it)
    first_batch_s = time.perf_counter() - t_build
    seen, t = 0, time.perf_counter()
    for batch in it:
        seen += len(batch[1])
        float(batch[0][:, :, 0, 0].sum())  # touch the batch
        if seen >= max_images:
            break
    return {"first_batch_s": first_batch_s, "img_per_s": seen / (time.perf_counter() - t), "images_timed": seen,
            "batch_shape": list(first[0].shape)}


def run_one(arm: str, n: int, args: argparse.Namespace) -> dict:
    """One measurement in this process (called through a subprocess by ``main``)."""
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from lightkit.data import ImageFolderDataModule, ShardDataModule, prepare_shards

    folder = subset(n, Path(args.dir))
    rss = PeakRSS()
    common = {"batch_size": args.batch_size, "image_size": args.image_size, "num_workers": args.workers, "seed": 0}
    result: dict = {"arm": arm, "images": n}
    if arm in ("memory", "stream"):
        t = time.perf_counter()
        dm = ImageFolderDataModule(str(folder), in_memory=arm == "memory", **common)
        result["init_s"] = time.perf_counter() - t
        result.update(_loader_run(dm, args.max_images))
        result["first_batch_s"] += result["init_s"]
    elif arm == "shards":
        out = Path(args.dir) / f"shards{n}"
        if not (out / "lightkit.json").is_file():
            t = time.perf_counter()
            prepare_shards(ImageFolderDataModule(str(folder), image_size=args.image_size), out,
                           num_workers=args.workers)
            result["prepare_s"] = time.perf_counter() - t
        t = time.perf_counter()
        dm = ShardDataModule(str(out), **common)
        result["init_s"] = time.perf_counter() - t
        result.update(_loader_run(dm, args.max_images))
        result["first_batch_s"] += result["init_s"]
    elif arm == "fit":
        result.update(_fit(folder, args))
    elif arm == "recipe":
        result.update(_recipe(folder, args))
    result["peak_rss_gb"] = rss.stop() / 2**30
    return result


def _fit(folder: Path, args: argparse.Namespace) -> dict:
    """The folder recipe's model and input size, streamed, for a few optimizer steps."""
    from functools import partial

    import torch
    from lightning.pytorch import Callback, Trainer

    from lightkit.data import ImageFolderDataModule
    from lightkit.models import ImageClassifier

    marks: dict[str, float] = {}

    class FirstStep(Callback):
        def on_train_batch_end(self, trainer, *rest) -> None:  # noqa: ANN001, ANN002
            marks.setdefault("first_step_s", time.perf_counter() - T0)

    dm = ImageFolderDataModule(str(folder), batch_size=32, image_size=32, augmentations="standard", flips=False,
                               num_workers=args.workers, in_memory="auto")
    model = ImageClassifier(encoder="resnet10t", num_classes=dm.num_classes, in_chans=dm.in_chans,
                            optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = Trainer(max_steps=args.fit_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=[FirstStep()])
    trainer.fit(model, datamodule=dm)
    return {"first_step_s": marks.get("first_step_s"), "steps": trainer.global_step,
            "total_s": time.perf_counter() - T0, "streamed": dm._streams()}  # noqa: SLF001


def _recipe(folder: Path, args: argparse.Namespace) -> dict:
    """The README's literal user command on the folder, cut to ``--fit_steps`` training steps (the range
    test's 100 steps, the test of the best checkpoint on 20 batches and the pixel baseline all run)."""
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as work:
        summary = Path(work) / "summary.json"
        cmd = [sys.executable, str(repo / "cli.py"), "fit", "--config", str(repo / "configs/folder.yaml"),
               "--data.init_args.root", str(folder), "--trainer.max_steps", str(args.fit_steps),
               "--trainer.limit_val_batches", "20", "--trainer.limit_test_batches", "20",
               "--trainer.enable_progress_bar", "false", "--summary_json", str(summary)]
        mark = Path(work) / "first_step"
        if args.first_step:
            cmd += ["--trainer.callbacks+=first_step_mark.FirstStepMark", f"--trainer.callbacks.path={mark}"]
        env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
        started = time.time()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"error": proc.stderr[-800:]}
        out = json.loads(summary.read_text())
        first = float(mark.read_text()) - started if mark.exists() else None
    return {"total_s": time.perf_counter() - T0, "steps": out["steps"], "fit_s": out["fit_seconds"],
            "first_optimizer_step_s": first,
            "baseline_s": out.get("baseline/pixel_logreg_seconds"),
            "baseline_test_images": out.get("baseline/pixel_logreg_test_images")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/lk_scale")
    parser.add_argument("--generate", type=int, default=None, help="generate this many images and exit")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--arms", nargs="+", default=["memory", "stream", "shards"],
                        choices=["memory", "stream", "shards", "fit", "recipe"])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max_images", type=int, default=2000, help="images timed per throughput run")
    parser.add_argument("--memory_max", type=int, default=5000, help="skip the in-memory arm above this size")
    parser.add_argument("--fit_steps", type=int, default=20)
    parser.add_argument("--first_step", action="store_true",
                        help="recipe arm: also time the first optimizer step (a callback added on the command line)")
    parser.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.generate:
        print(generate(args.generate, Path(args.dir)))
        return
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]), args)))
        return
    load = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load:.2f} ({'idle' if load < 1.5 else 'loaded box'})")
    for n in args.sizes:
        for arm in args.arms:
            if arm == "memory" and n > args.memory_max:
                row = {"arm": arm, "images": n, "skipped": f"in memory above {args.memory_max} images (~1 GB per "
                                                         f"1k images at 224 px; 24 GB box)"}
            else:
                cmd = [sys.executable, __file__, "--one", arm, str(n), "--dir", args.dir, "--image_size",
                       str(args.image_size), "--batch_size", str(args.batch_size), "--workers", str(args.workers),
                       "--max_images", str(args.max_images), "--fit_steps", str(args.fit_steps)]
                cmd += ["--first_step"] if args.first_step else []
                load_before = os.getloadavg()[0]
                root = str(Path(__file__).resolve().parents[1])
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                row = json.loads(line[7:]) if line else {"arm": arm, "images": n, "error": proc.stderr[-500:]}
                row["load_before"] = round(load_before, 2)
            print(json.dumps(row))
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
