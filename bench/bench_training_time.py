"""Benchmark training time: each classifier kind at 20,000 and 100,000 objects, ~120 classes.

Times what :func:`~ecotaxa_core.learn.training.train_model` fits: the held-out
fit (a stratified 80 % part, :func:`~ecotaxa_core.learn.evaluation.holdout_split`)
then the final refit on every object, with
:func:`~ecotaxa_core.learn.classifiers.make_classifier` (reading the learning
set and writing the registry are left out: they take seconds).

Features are real when ``--data`` holds ``X.npy``, ``y.npy`` and ``names.json``
(NDSB objects: EfficientNet-Lite0 vectors, names ``deep_effnetlite0:...``, then
morphological features): objects are drawn from them (with replacement and a
little noise, 2 % of each feature's spread, past their number). Otherwise
Gaussian clusters stand in. Feature sets per kind:

- ``classic_rf``: the morphological features (41 in the NDSB file);
- ``deep_logreg``, ``deep_mlp``: the 1280 deep features (``--deep-with-morpho``: + morphology);
- ``deep_rf``: the 50 principal components of the deep features (PCA not timed);
- ``deep_logreg_rf`` (the default model): deep + morphological features, its
  forest on the morphological ones.

Each (kind, size) runs in a child process stopped after ``--max-seconds``, so a
run stays bounded; lines are printed as fits end.

    python bench/bench_training_time.py
    python bench/bench_training_time.py --kinds classic_rf deep_logreg --sizes 20000 --max-seconds 600
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue as queue_module
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("classic_rf", "deep_logreg", "deep_rf", "deep_mlp", "deep_logreg_rf")
DEFAULT_DATA = Path("/work/benchwork/explore")


def load_features(data: Path, n_classes: int, seed: int):
    """(deep block, morphology block, labels, source) from ``data`` or synthetic clusters."""
    if (data / "X.npy").is_file() and (data / "y.npy").is_file():
        X = np.load(data / "X.npy").astype(np.float32)
        y = np.load(data / "y.npy")
        names = json.loads((data / "names.json").read_text())
        deep = np.array([str(n).startswith("deep_") for n in names])
        return (X[:, deep], X[:, ~deep], y,
                f"{data} ({len(y)} objects, {deep.sum()} deep + {(~deep).sum()} other "
                f"features, {len(np.unique(y))} classes)")
    rng = np.random.default_rng(seed)
    n = 20_000
    y = rng.integers(0, n_classes, n)
    deep = (rng.normal(0, 1, (n_classes, 1280))[y] + rng.normal(0, 2, (n, 1280))).astype(np.float32)
    morpho = (rng.normal(0, 1, (n_classes, 41))[y] + rng.normal(0, 1, (n, 41))).astype(np.float32)
    return deep, morpho, y, f"synthetic clusters ({n_classes} classes)"


def resample(X: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``X``: a subset when there are enough, else drawn again with noise."""
    rng = np.random.default_rng(seed)
    if n <= len(y):
        rows = np.sort(rng.choice(len(y), n, replace=False))
        return X[rows], y[rows]
    rows = rng.integers(0, len(y), n)
    rows[:len(y)] = np.arange(len(y))  # every original row once
    spread = np.nanstd(X, axis=0).astype(np.float32)
    noise = rng.normal(0, 1, (n, X.shape[1])).astype(np.float32) * (0.02 * spread)
    noise[:len(y)] = 0
    return X[rows] + noise, y[rows]


def _fit_both(kind: str, X: np.ndarray, y: np.ndarray, seed: int, names: list[str],
              queue) -> None:
    from ecotaxa_core.learn.classifiers import make_classifier
    from ecotaxa_core.learn.evaluation import holdout_split

    split = holdout_split(y, test_size=0.2, seed=seed)
    t = time.perf_counter()
    make_classifier(kind, random_state=seed, feature_names=names).fit(
        X[split.train_index], y[split.train_index])
    queue.put(("holdout", time.perf_counter() - t))
    t = time.perf_counter()
    make_classifier(kind, random_state=seed, feature_names=names).fit(X, y)
    queue.put(("final", time.perf_counter() - t))


def time_kind(kind: str, X: np.ndarray, y: np.ndarray, seed: int, max_seconds: float,
              names: list[str]) -> dict[str, float | None]:
    """Seconds of the held-out fit and of the final fit (None: stopped at ``max_seconds``)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_fit_both, args=(kind, X, y, seed, names, queue), daemon=True)
    child.start()
    times: dict[str, float | None] = {"holdout": None, "final": None}
    deadline = time.monotonic() + max_seconds
    while None in times.values() and time.monotonic() < deadline:
        try:
            name, seconds = queue.get(timeout=1.0)
            times[name] = seconds
        except queue_module.Empty:
            if not child.is_alive() and queue.empty():
                raise RuntimeError(f"{kind}: the fitting process ended with code "
                                   f"{child.exitcode} (see its error above)") from None
    if child.is_alive():
        child.terminate()
    child.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[20_000, 100_000])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with X.npy, y.npy, names.json (else synthetic clusters)")
    parser.add_argument("--classes", type=int, default=120, help="classes of synthetic data")
    parser.add_argument("--deep-with-morpho", action="store_true",
                        help="deep_logreg / deep_mlp on deep + morphological features")
    parser.add_argument("--max-seconds", type=float, default=1800,
                        help="stop a (kind, size) after this long (both fits together)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    deep, morpho, y, source = load_features(args.data, args.classes, args.seed)
    print(f"features: {source}", flush=True)
    inputs = {"classic_rf": morpho,
              "deep_logreg": np.hstack([deep, morpho]) if args.deep_with_morpho else deep,
              "deep_mlp": np.hstack([deep, morpho]) if args.deep_with_morpho else deep,
              "deep_logreg_rf": np.hstack([deep, morpho])}
    # Column names: what tells deep_logreg_rf which columns its forest takes.
    deep_names = [f"deep_effnetlite0:f{i}" for i in range(deep.shape[1])]
    morpho_names = [f"morpho:m{i}" for i in range(morpho.shape[1])]
    if "deep_rf" in args.kinds:
        from sklearn.decomposition import PCA

        inputs["deep_rf"] = PCA(50, random_state=args.seed).fit_transform(
            np.nan_to_num(deep)).astype(np.float32)
    rows = []
    print(f"{'kind':12s} {'objects':>8s} {'features':>8s} {'classes':>7s} "
          f"{'held-out fit':>13s} {'final fit':>10s} {'total':>8s}", flush=True)
    for n in args.sizes:
        for kind in args.kinds:
            X, labels = resample(inputs[kind], y, n, args.seed)
            names = (morpho_names if kind == "classic_rf"
                     else deep_names + morpho_names if X.shape[1] > deep.shape[1] else [])
            times = time_kind(kind, X, labels, args.seed, args.max_seconds, names)
            cells = [f"{t:.1f} s" if t is not None else f"> {args.max_seconds:.0f} s"
                     for t in times.values()]
            total = (f"{sum(times.values()):.1f} s" if None not in times.values() else "-")
            rows.append(f"{kind:12s} {n:8d} {X.shape[1]:8d} {len(np.unique(labels)):7d} "
                        f"{cells[0]:>13s} {cells[1]:>10s} {total:>8s}")
            print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
