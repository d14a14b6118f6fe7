"""The recipe's ``ensemble: auto`` on the user-folder benchmark, built from member fits (issue 16).

``configs/folder.yaml`` trains three models on these folders (member 1 with ``--seed_everything S``, members 2
and 3 with S+1 and S+2; the folders have train/val/test sub-folders, so the data split does not depend on the
seed) and tests the mean of their softmax. Member 1 is exactly the single-model recipe that
``benchmarks/user_folders.py`` already ran (its ``recipe`` runs before the ensemble, kept as ``recipe_single``).
This script trains members 2 and 3 with the command a user would run for one model with that seed
(``fit --config configs/folder.yaml --ensemble 1 --seed_everything S+i``; ``tests/test_ensemble_fit.py`` checks
that ``--ensemble`` trains its members bit-identically to that command), then scores the three best checkpoints
with ``cli.py test --ensemble_ckpts`` and merges the result into ``user_folders_results.json`` as arm ``recipe``.

    python benchmarks/ensemble_members.py fit --datasets digits10 photos --work /tmp/uf_now --threads 1
    python benchmarks/ensemble_members.py score --work /tmp/uf_now --single_logs /tmp/uf_now/logs --single_root .
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO)]
import user_folders as uf  # noqa: E402

from lightkit.ensemble_fit import AUTO_MEMBERS  # noqa: E402


def member_dir(work: Path, dataset: str, seed: int, index: int) -> Path:
    return work / "members" / dataset / f"seed{seed}" / f"m{index}"


def fit_members(work: Path, datasets: list[str], seeds: list[int], models: int) -> None:
    """Models 2..``models`` per folder (member index 1..models-1, seed S+index); finished ones are kept."""
    env = {**os.environ, **uf.OFFLINE_ENV}
    for dataset in datasets:
        for seed in seeds:
            root = uf.dataset_dir(work, dataset, seed)
            for index in range(1, models):
                out = member_dir(work, dataset, seed, index)
                if (out / "summary.json").exists():
                    continue
                out.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "cli.py", "fit", "--config", "configs/folder.yaml", "--data.init_args.root",
                       str(root), "--ensemble", "1", "--seed_everything", str(seed + index), "--run_dir",
                       str(out / "run"), "--summary_json", str(out / "summary.json")]
                t0 = time.time()
                with open(out / "log.txt", "w") as sink:
                    code = subprocess.run(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT).returncode
                if code != 0:
                    raise SystemExit(f"member fit failed (exit {code}): see {out / 'log.txt'}")
                acc = json.loads((out / "summary.json").read_text())["test/acc"]
                print(f"{dataset} seed {seed} member {index + 1}: test acc {100 * acc:.1f} % "
                      f"({time.time() - t0:.0f} s)", flush=True)


def score(work: Path, single_logs: Path, results_path: Path, single_root: Path = REPO, models: int = AUTO_MEMBERS,
          arm: str = "recipe") -> None:
    """Arm ``arm`` = the ``models``-model ensemble; the single-model ``recipe`` runs become ``recipe_single``."""
    results = uf.load_results(results_path)
    for run in results["runs"]:
        if run["arm"] == "recipe" and "member_test_acc" not in run:
            run["arm"] = "recipe_single"
    env = {**os.environ, **uf.OFFLINE_ENV}
    singles = {(r["dataset"], r["seed"]): r for r in results["runs"] if r["arm"] == "recipe_single"}
    for (dataset, seed), single in sorted(singles.items()):
        log = single_logs / dataset / f"seed{seed}" / "recipe.log"
        members = [member_dir(work, dataset, seed, i) for i in range(1, models)]
        if not log.exists() or not all((m / "summary.json").exists() for m in members):
            continue
        first = single_root / re.search(r"runs/folder/version_\d+", log.read_text()).group(0) / "checkpoints/best.ckpt"
        ckpts = [str(first)] + [json.loads((m / "summary.json").read_text())["checkpoint"] for m in members]
        root = uf.dataset_dir(work, dataset, seed)
        cmd = [sys.executable, "cli.py", "test", "--config", "configs/folder.yaml", "--data.init_args.root", str(root),
               "--seed_everything", str(seed), "--ensemble_ckpts", "[" + ",".join(ckpts) + "]", "--trainer.logger",
               "false", "--run_dir", str(work / "ensemble_scores" / f"{dataset}_s{seed}")]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        accs = [float(v) for v in re.findall(r"^best\.ckpt\s+([\d.]+)", proc.stdout, re.M)]
        found = re.search(rf"^ensemble \({models}\)\s+([\d.]+)\s+([\d.]+)", proc.stdout, re.M)
        if proc.returncode != 0 or found is None or len(accs) != models:
            raise SystemExit(f"scoring {dataset} seed {seed} failed: {proc.stderr.strip().splitlines()[-1:]}")
        if abs(accs[0] - single["test_acc"]) > 1e-3:
            raise SystemExit(f"{dataset} seed {seed}: member 1 scores {accs[0]}, the recipe run {single['test_acc']}")
        run = {**single, "arm": arm, "test_acc": float(found.group(1)), "test_nll": float(found.group(2)),
               "member_test_acc": accs, "members": ckpts,
               "command": single["command"].replace(" --summary_json", " --ensemble auto --summary_json"),
               "composed": f"member 1 = the recipe_single run; members 2-{models} from ensemble_members.py fit"}
        uf.merge(results, run)
        print(f"{dataset} seed {seed}: {arm}, ensemble {100 * run['test_acc']:.1f} % (models "
              f"{', '.join(f'{100 * a:.1f}' for a in accs)})", flush=True)
    results_path.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("fit", "score"))
    parser.add_argument("--datasets", nargs="+", default=list(uf.DEFAULT_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--work", type=Path, default=Path("/tmp/lightkit_user_folders"))
    parser.add_argument("--single_logs", type=Path, help="score: the recipe runs' logs (<ds>/seed<S>/recipe.log)")
    parser.add_argument("--single_root", type=Path, default=REPO,
                        help="score: the checkout the recipe runs ran in (their logs name runs/folder/version_N)")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("user_folders_results.json"))
    parser.add_argument("--models", type=int, default=AUTO_MEMBERS,
                        help="models per ensemble, member 1 included (default: what ensemble: auto trains)")
    parser.add_argument("--arm", default="recipe", help="score: the arm the ensembles are merged as")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    if args.step == "fit":
        fit_members(args.work, args.datasets, args.seeds, args.models)
    else:
        score(args.work, args.single_logs or args.work / "logs", args.results, args.single_root, args.models, args.arm)


if __name__ == "__main__":
    main()
