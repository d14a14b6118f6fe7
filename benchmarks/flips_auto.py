"""``flips: auto`` (issue 16): what :func:`lightkit.baseline.mirror_test` decides on each benchmark folder.

Builds the folders of ``benchmarks/user_folders.py`` (and the held-out ones of ``recipe_tuning.py``) and prints,
per dataset and seed, the linear model's cross-validated balanced accuracy on the train + validation images as they are
and mirrored, the share of its skill above chance that survives (``kept``), the decision (``kept >= 0.65``)
and the seconds the test took. The expected answer: off for digits (a mirrored 2 is not a 2), on for faces,
photo patches and textures.

    python benchmarks/flips_auto.py                                  # every dataset, seeds 0 1 2
    python benchmarks/flips_auto.py --datasets digits10 lfw --seeds 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_tuning  # noqa: E402,F401 - registers tune_gray / tune_rgb in user_folders.DATASETS
import user_folders as uf  # noqa: E402

from lightkit.baseline import MIRROR_KEPT, mirror_test  # noqa: E402
from lightkit.data import ImageFolderDataModule  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=[*uf.DEFAULT_DATASETS, "tune_gray", "tune_rgb"],
                        choices=list(uf.DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=uf.REPO / "runs/user_folders")
    args = parser.parse_args(argv)
    print(f"| dataset | seed | images | plain (bal. acc.) | mirrored | chance | kept | flips (kept >= {MIRROR_KEPT}) "
          f"| s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for dataset in args.datasets:
        for seed in args.seeds:
            root = uf.dataset_dir(args.work, dataset, seed)
            d = mirror_test(ImageFolderDataModule(str(root), flips="auto"))
            kept = "-" if d.kept is None else f"{d.kept:.2f}"
            print(f"| {dataset} | {seed} | {d.n_images} | {100 * d.plain:.1f} | {100 * d.mirrored:.1f} | "
                  f"{100 * d.chance:.1f} | {kept} | {'on' if d.flips else 'off'} | {d.seconds:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
