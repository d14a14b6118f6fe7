"""What the pre-flight check costs against the flight (issue 17): ``sanity`` vs ``fit`` on the quickstart.

Both are the README's whole commands, each in a fresh process and a fresh working directory, run
alternately (fit, sanity, fit, sanity, ...) so that load drifts hit both alike:

    python cli.py fit    --config configs/quickstart.yaml
    python cli.py sanity --config configs/quickstart.yaml

    python cli.py fit    --config configs/quickstart.yaml --sanity_first true

plus ``python cli.py fit --config configs/quickstart.yaml --print_config`` (the start-up every command
pays: imports and parsing). Prints each run's wall seconds, the medians, the ratios against fit (goal:
<= 0.25) of the separate ``sanity`` command and of the checks run inside ``fit`` (``--sanity_first``:
the fit with checks minus the fit without), and each check's own seconds from ``sanity.json``.

    python benchmarks/sanity_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}


def timed(args: list[str], work: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=work, env=ENV,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/quickstart.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()} ({os.cpu_count()} CPUs)", flush=True)
    times: dict[str, list[float]] = {"startup": [], "fit": [], "sanity": [], "fit_sanity_first": []}
    checks: dict[str, list[float]] = {}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            times["startup"].append(timed(["fit", "--config", args.config, "--print_config"], work))
            times["fit"].append(timed(["fit", "--config", args.config], work))
            times["sanity"].append(timed(["sanity", "--config", args.config], work))
            report = json.loads(next(work.rglob("sanity.json")).read_text())
            for check in report["checks"]:
                checks.setdefault(check["name"], []).append(check["measured"].get("seconds", float("nan")))
            with tempfile.TemporaryDirectory() as other:  # its own folder: the sanity.json read below is its own
                times["fit_sanity_first"].append(timed(["fit", "--config", args.config, "--sanity_first", "true"],
                                                       Path(other)))
                inside = json.loads(next(Path(other).rglob("sanity.json")).read_text())["seconds"]
                times.setdefault("inside", []).append(inside)
        print(f"repeat {r}: start-up {times['startup'][-1]:.1f} s, fit {times['fit'][-1]:.1f} s, "
              f"sanity {times['sanity'][-1]:.1f} s, fit --sanity_first {times['fit_sanity_first'][-1]:.1f} s "
              f"(its checks {times['inside'][-1]:.1f} s, timed inside), "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians over {args.repeats}: start-up {med['startup']:.1f} s, fit {med['fit']:.1f} s, "
          f"sanity {med['sanity']:.1f} s, fit --sanity_first {med['fit_sanity_first']:.1f} s")
    print(f"sanity / fit (whole commands): {med['sanity'] / med['fit']:.3f}  (goal <= 0.25)")
    added = [a - b for a, b in zip(times["fit_sanity_first"], times["fit"], strict=True)]
    print(f"fit --sanity_first: the checks add {statistics.median(added):.1f} s (median of paired differences "
          f"{', '.join(f'{d:.1f}' for d in added)}) = {statistics.median(added) / med['fit']:.3f} of the fit "
          f"(goal <= 0.25)")
    print(f"fit --sanity_first: the checks timed inside the process (sanity.json 'seconds': data set-up, "
          f"sampling, checks, baseline): {med['inside']:.1f} s = {med['inside'] / med['fit']:.3f} of the fit")
    print(f"sanity / fit (start-up taken out of both): "
          f"{(med['sanity'] - med['startup']) / (med['fit'] - med['startup']):.3f}")
    print("per check (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in checks.items()))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
