"""How the deep extractor's input size changes accuracy and speed, on real NDSB images.

Takes the ``--classes`` most populated classes of the shared NDSB PlanktonSet
sample, at most ``--per-class`` images each (seeded), splits them 70/30
stratified (seeded), and for each input size extracts ``deep_effnetlite0``
features (EcoTaxa's preprocessing, ImageNet EfficientNet-Lite0, frozen),
fits the ``deep_logreg`` classifier on the 70 % and scores the 30 %. Prints,
per size, the extraction rate (images/s, this machine, all its cores) and the
held-out accuracy and balanced accuracy.

    python bench/bench_input_size.py [--sizes 64 96 128 160 224] [--classes 20]
                                     [--per-class 100] [--seed 0]
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160, 224])
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import train_test_split

    from ecotaxa_core.features.deep import EfficientNetLite0Extractor
    from ecotaxa_core.learn.classifiers import make_classifier

    with tempfile.TemporaryDirectory() as tmp:
        paths, labels = extract_classes(Path(tmp), args.classes, args.per_class, args.seed)
        y = np.array(labels)
        train, test = train_test_split(np.arange(len(paths)), test_size=0.3, stratify=y,
                                       random_state=args.seed)
        print(f"{len(paths)} NDSB images, {args.classes} classes, {len(train)} to train, "
              f"{len(test)} held out; {torch.get_num_threads()} torch threads")
        print(f"{'input px':>8} {'images/s':>9} {'accuracy':>9} {'balanced':>9}")
        for size in args.sizes:
            extractor = EfficientNetLite0Extractor(input_size=size, batch_size=args.batch_size)
            extractor.extract(paths[:args.batch_size])  # load the model, warm up
            start = time.perf_counter()
            x = extractor.extract(paths)
            rate = len(paths) / (time.perf_counter() - start)
            model = make_classifier("deep_logreg", random_state=args.seed).fit(x[train], y[train])
            predicted = model.predict(x[test])
            print(f"{size:>8} {rate:>9.0f} {accuracy_score(y[test], predicted):>9.3f} "
                  f"{balanced_accuracy_score(y[test], predicted):>9.3f}", flush=True)


if __name__ == "__main__":
    main()
