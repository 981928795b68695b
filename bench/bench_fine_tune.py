"""Fine-tuning throughput (images/s) and quality on real NDSB images, CPU or GPU.

Takes the ``--classes`` most populated classes of the shared NDSB PlanktonSet
sample (0: all 121), at most ``--per-class`` images each (0: all; seeded),
holds out ``--test-fraction`` of each class as a test set never seen in
training, and fine-tunes EfficientNet-Lite0 (ImageNet) + 600 bottleneck on the
rest exactly as ``ecotaxa fine-tune`` does (:mod:`ecotaxa_core.learn.fine_tuning`:
EcoTaxa's preprocessing once per image, augmented batches, class weights,
AdamW with warm-up and cosine decay, early stopping on a stratified
validation split). Prints, per epoch, the training rate (images/s, training
steps only) and the validation loss and accuracy, then the best epoch's
accuracy, balanced accuracy, log loss and plankton precision and recall on the
test set (:func:`~ecotaxa_core.learn.evaluation.score_probabilities`, as the
model registry scores a classifier).

    python bench/bench_fine_tune.py --classes 20 --per-class 100 --epochs 3 --input-size 128
    python bench/bench_fine_tune.py --classes 0 --per-class 0 --epochs 15 --device cuda \\
        --batch-size 128 --input-size 224                     # the whole set, on a GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from ndsb_sample import extract_classes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=20, help="largest classes (0: all)")
    parser.add_argument("--per-class", type=int, default=100, help="images per class (0: all)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    from ecotaxa_core.learn.evaluation import holdout_split, score_probabilities
    from ecotaxa_core.learn.fine_tuning import (FineTuningSettings, load_base,
                                                predict_images, preprocess_images,
                                                resolve_device, train_network)

    settings = FineTuningSettings(input_size=args.input_size, epochs=args.epochs,
                                  batch_size=args.batch_size, learning_rate=args.learning_rate,
                                  patience=args.patience, time_budget_s=args.time_budget,
                                  validation_fraction=args.validation_fraction, seed=args.seed,
                                  device=args.device, num_threads=args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = extract_classes(Path(tmp), args.classes, args.per_class, args.seed)
        classes = sorted(set(labels))
        y = np.searchsorted(classes, labels)
        t0 = time.perf_counter()
        images = preprocess_images([str(p) for p in paths], [0] * len(paths), args.input_size,
                                   args.threads or torch.get_num_threads())
        preprocess_s = time.perf_counter() - t0
    outer = holdout_split(y, test_size=args.test_fraction, seed=args.seed)
    rest = outer.train_index
    inner = holdout_split(y[rest], test_size=args.validation_fraction, seed=args.seed)
    train, val, test = rest[inner.train_index], rest[inner.test_index], outer.test_index
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU, {args.threads or torch.get_num_threads()} torch threads")
    print(f"{len(paths)} NDSB images, {len(classes)} classes: {len(train)} train, {len(val)} "
          f"validation, {len(test)} test; {args.input_size} px, batch {args.batch_size}, "
          f"{name}; preprocessing {len(paths) / preprocess_s:.0f} images/s", flush=True)
    base = load_base("effnetlite0", Path(tmp) / "backbones.toml")
    outcome = train_network(base, images, y, len(classes), train, val, settings,
                            log=lambda line: print(line, flush=True))
    probs = predict_images(outcome.model, images[test], base.mean, base.std, args.device,
                           2 * args.batch_size)
    metrics = score_probabilities(y[test], probs, np.arange(len(classes)), dict(enumerate(classes)))
    result = {
        "n_images": len(paths), "n_classes": len(classes), "n_train": len(train),
        "n_validation": len(val), "n_test": len(test), "input_size": args.input_size,
        "batch_size": args.batch_size, "device": name, "epochs_run": len(outcome.history),
        "best_epoch": outcome.best_epoch, "stopped": outcome.stopped,
        "train_images_per_s": [r["images_per_s"] for r in outcome.history],
        "validation": outcome.validation,
        "test": {name: round(metrics[name], 4) for name in (
            "accuracy", "balanced_accuracy", "log_loss", "plankton_weighted_precision",
            "plankton_weighted_recall", "plankton_macro_precision", "plankton_macro_recall")},
        "test_metrics": metrics,
        "seconds": round(outcome.seconds, 1)}
    print(f"best epoch {outcome.best_epoch} of {len(outcome.history)} ({outcome.stopped}); "
          f"test accuracy {result['test']['accuracy']:.3f}, balanced accuracy "
          f"{result['test']['balanced_accuracy']:.3f}, log loss {result['test']['log_loss']:.3f}, "
          f"plankton precision {result['test']['plankton_weighted_precision']:.3f} and recall "
          f"{result['test']['plankton_weighted_recall']:.3f} (support-weighted); "
          f"training {np.mean(result['train_images_per_s']):.1f} images/s; "
          f"{outcome.seconds:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
