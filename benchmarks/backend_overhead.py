"""Framework overhead of the search backends: trials per hour, and per-trial wall time that is not training.

The same search runs four ways, each in a fresh run folder on this machine: the Optuna backend as one
process, then as two processes sharing the study (how Optuna runs trials in parallel), and the Ray backend on
a local Ray instance with --max-concurrent 1, then 2. Every trial gets the same threads (all cores over the
number of concurrent trials).

Training time is the time spent in train_candidate's training and evaluation loops: the Ray trials record it
in the study (`train_seconds`); the Optuna processes run with train_candidate wrapped to log it. Overhead per
trial is the slot time (wall time x concurrent trials) that was not training, over the trained trials: it
includes process and Ray start-up, data loading, sampling and screening, checkpoints and the run folder's
files. `in-loop` leaves out the start-up: the trials' own ask-to-tell durations minus their training.

    python benchmarks/backend_overhead.py                   # the README's default search (--preset demo)
    python benchmarks/backend_overhead.py --preset small --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    # The README's default search (results/make_default_run.sh): every other flag at its default.
    "demo": ["--space", "search_spaces/resnet_family.yaml", "--budget", "4GFLOPs"],
    # The tests' search: a few hundred images, one epoch, small candidates.
    "small": ["--space", "search_spaces/cifar_family.yaml", "--budget", "100M", "--epochs", "1",
              "--train-samples", "200", "--val-samples", "100", "--proxy-width", "0.25"],
}
# Runs `resnas` with train_candidate wrapped to append its training seconds to $RESNAS_BENCH_LOG.
_TIMED_CLI = """
import json, os, sys, time
import resnas._train as T
from resnas.cli import main
inner = T.train_candidate
def timed(*args, **kwargs):
    start = time.perf_counter()
    try:
        result = inner(*args, **kwargs)
        seconds = result.train_seconds + result.eval_seconds
        return result
    except BaseException:
        seconds = time.perf_counter() - start  # pruned or failed: the loops' time until then
        raise
    finally:
        with open(os.environ["RESNAS_BENCH_LOG"], "a") as f:
            f.write(json.dumps(seconds) + "\\n")
T.train_candidate = timed
sys.exit(main(sys.argv[1:]))
"""


@dataclass(frozen=True)
class Measure:
    """One backend at one concurrency."""

    name: str
    concurrent: int
    wall_s: float
    trained: int
    train_s: float
    trial_s: float  # the trained trials' ask-to-tell durations, summed

    def row(self) -> str:
        slot = self.wall_s * self.concurrent / self.trained  # slot time per trial
        overhead = slot - self.train_s / self.trained
        in_loop = (self.trial_s - self.train_s) / self.trained
        return (f"{self.name:<8} {self.concurrent:>3} {self.trained:>7} {self.wall_s:>8.1f} "
                f"{self.trained / self.wall_s * 3600:>9.0f} {slot:>9.1f} {self.train_s / self.trained:>8.1f} "
                f"{overhead:>9.2f} {overhead / slot:>6.1%} {in_loop:>8.2f} {in_loop / slot:>6.1%}")


def _study_times(out: Path) -> tuple[int, float, float]:
    """Trained trials, their recorded training seconds (Ray's), and their ask-to-tell durations."""
    import optuna

    study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("state") in ("complete", "pruned")]
    train = sum(t.user_attrs.get("train_seconds", 0.0) for t in done)
    durations = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    return len(done), train, durations


def _wait_for_study(db: Path, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the first process has created its study in `db`."""
    import sqlite3

    while proc.poll() is None:
        time.sleep(0.2)
        if db.is_file():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("select count(*) from studies").fetchone()[0]:
                        return
            except sqlite3.OperationalError:  # the schema is still being created
                pass


def optuna_backend(flags: list[str], concurrent: int, threads: int, work: Path) -> Measure:
    """`concurrent` Optuna processes on one run folder."""
    out, log = work / f"optuna-{concurrent}", work / f"optuna-{concurrent}.train.jsonl"
    env = {**os.environ, "RESNAS_BENCH_LOG": str(log), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", _TIMED_CLI, "search", *flags, "--out", str(out)]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)]
    if concurrent > 1:
        # Two processes creating the same SQLite study at once collide in Optuna's schema set-up.
        _wait_for_study(out / "study.db", procs[0])
        procs += [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(concurrent - 1)]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError(f"the Optuna search failed: {cmd}")
    wall = time.perf_counter() - start
    trained, _, durations = _study_times(out)
    train = sum(json.loads(line) for line in log.read_text().splitlines())
    return Measure("optuna", concurrent, wall, trained, train, durations)


def ray_backend(flags: list[str], concurrent: int, threads: int, work: Path) -> Measure:
    """One Ray-backend search on a local Ray instance, `concurrent` trials at once."""
    out = work / f"ray-{concurrent}"
    cmd = [sys.executable, "-m", "resnas.cli", "search", *flags, "--out", str(out), "--backend", "ray",
           "--max-concurrent", str(concurrent), "--cpus-per-trial", str(threads)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    trained, train, durations = _study_times(out)
    return Measure("ray", concurrent, wall, trained, train, durations)


def main() -> None:
    """Run the four searches and print their numbers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--trials", type=int, default=8, help="trained candidates per search (default 8, as resnas)")
    p.add_argument("--backends", default="optuna,ray", help="comma-separated: optuna, ray")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    flags = [*PRESETS[args.preset], "--trials", str(args.trials)]
    print(f"search: resnas search {' '.join(flags)}  ({cores} cores)")
    print(f"{'backend':<8} {'at':>3} {'trained':>7} {'wall s':>8} {'trials/h':>9} {'slot s':>9} {'train s':>8} "
          f"{'overhead':>9} {'':>6} {'in-loop':>8} {'':>6}")
    runners = {"optuna": optuna_backend, "ray": ray_backend}
    with tempfile.TemporaryDirectory(prefix="resnas-bench-") as tmp:
        for name in args.backends.split(","):
            for concurrent in (1, 2):
                m = runners[name](flags, concurrent, max(1, cores // concurrent), Path(tmp))
                print(m.row(), flush=True)
    print("slot s: wall time x concurrent trials / trained trials; overhead: slot time not spent training "
          "(per trial, and its share of the slot); in-loop: the same without start-up (ask-to-tell minus training)")


if __name__ == "__main__":
    main()
