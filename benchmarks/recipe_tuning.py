"""Recipe tuning for ``configs/folder.yaml`` on held-out folders (issue 16): data the user-folder benchmark never uses.

The goals of issue 16 are measured by ``benchmarks/user_folders.py`` on digits, lfw, textures and photos. A change
to the recipe is chosen here first, on other package-bundled images, so that the benchmark's figures are not the
figures it was tuned on:

- ``tune_gray``: scikit-image camera, moon, coins, cell: 32 px gray patches from disjoint 64 px cells (4 classes)
- ``tune_rgb``: scikit-image hubble_deep_field, immunohistochemistry, retina: 32 px RGB patches (3 classes)
- ``tune_photos``: natural colour photos no benchmark folder uses (scikit-learn's china and flower, scikit-image's
  stereo_motorcycle left view, matplotlib's grace_hopper): 32 px RGB patches (4 classes), the benchmark's
  ``photos`` shape
- ``tune_digits``: sklearn digits that are in no test split of the benchmark's digits5 / digits10 for seeds
  0-4 (about 590 images): 10 train and 5 val per class, the rest (about 440) test. The benchmark's test images
  are never used here.

Each variant is a full config file (``--variants name=path.yaml ...``); every run is
``cli.py fit --config <variant> --data.init_args.root DIR --seed_everything S --summary_json OUT``.

    python benchmarks/recipe_tuning.py --variants base=configs/folder.yaml ema=/tmp/ema.yaml --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import user_folders as uf  # noqa: E402

uf.DATASETS["tune_gray"] = lambda root, seed: uf.build_patches(
    root, seed, {n: uf._skimage(n) for n in ("camera", "moon", "coins", "cell")})
uf.DATASETS["tune_rgb"] = lambda root, seed: uf.build_patches(
    root, seed, {n: uf._skimage(n) for n in ("hubble_deep_field", "immunohistochemistry", "retina")})



def _sample_image(index: int):
    def load():
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]
    return load


def _motorcycle():
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


def _grace_hopper():
    import matplotlib.cbook
    import numpy as np
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


uf.DATASETS["tune_photos"] = lambda root, seed: uf.build_patches(
    root, seed, {"china": _sample_image(0), "flower": _sample_image(1), "motorcycle": _motorcycle,
                 "grace_hopper": _grace_hopper})

BENCHMARK_SEEDS = range(5)  # the seeds whose digits test splits tune_digits leaves out


def build_tune_digits(root: Path, seed: int) -> None:
    import numpy as np

    images, target = uf.load_digits_uint8()
    tested: set[int] = set()
    for s in BENCHMARK_SEEDS:  # the benchmark's own split rule (build_digits): the same test images per seed
        tested |= set(uf._stratified(target, s, lambda n: (0, 0, uf.digits_test_size(n)))["test"].tolist())
    pool = np.asarray(sorted(set(range(len(target))) - tested))
    split = uf._stratified(target[pool], 1000 + seed, lambda n: (10, 5, n - 15))
    uf._write_indexed(root, images[pool], target[pool], [str(c) for c in range(10)], split)


uf.DATASETS["tune_digits"] = build_tune_digits


def run(config: str, root: Path, seed: int, out_dir: Path, name: str) -> dict:
    """The variant's fit through the user-folder benchmark's runner; a finished run (its JSON) is reused."""
    if (out_dir / f"{name}.json").exists():
        return uf.read_cli_result(root, seed, name, out_dir, 0, config)
    result = uf.run_cli(root, seed, name, out_dir, None, config)
    if "error" in result:
        raise SystemExit(f"run failed ({result['error']}): see {out_dir / (name + '.log')}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", required=True, help="name=config.yaml")
    parser.add_argument("--datasets", nargs="+", default=["tune_gray", "tune_rgb"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lightkit_recipe_tuning"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the runs inherit it
    print(f"load average at start: {os.getloadavg()}", flush=True)
    table: dict[tuple[str, str], list[float]] = {}
    for dataset in args.datasets:
        for seed in args.seeds:
            root = uf.dataset_dir(args.work, dataset, seed)
            for variant in args.variants:
                name, config = variant.split("=", 1)
                out_dir = args.work / "runs" / f"{dataset}_s{seed}"
                out_dir.mkdir(parents=True, exist_ok=True)
                result = run(str(Path(config).resolve()), root, seed, out_dir, name)
                acc = 100 * float(result["test_acc"])
                table.setdefault((dataset, name), []).append(acc)
                print(f"{dataset} seed {seed} {name}: test acc {acc:.1f} %", flush=True)
    for (dataset, name), accs in table.items():
        print(f"{dataset:10s} {name:8s} median {statistics.median(accs):.1f} %  per seed {accs}")


if __name__ == "__main__":
    main()
