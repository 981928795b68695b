"""The shared NDSB PlanktonSet sample, and class-folder subsets of it for the benchmarks."""

from __future__ import annotations

import os
import random
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NDSB_ZIP = Path(os.environ.get("ECOTAXA_SHARED_DATASETS", ROOT.parent / "shared" / "datasets")) \
    / "ndsb_planktonset1_dev.zip"


def extract_classes(dest: Path, n_classes: int, per_class: int,
                    seed: int) -> tuple[list[Path], list[str]]:
    """Images of the ``n_classes`` largest classes (0: all), ``per_class`` at most each
    (0: all, else a seeded random choice), written as ``dest/<class>/<image>``; and labels."""
    with zipfile.ZipFile(NDSB_ZIP) as z:
        by_class: dict[str, list[str]] = defaultdict(list)
        for name in sorted(z.namelist()):
            if name.endswith(".jpg"):
                by_class[name.split("/")[1]].append(name)
        largest = sorted(by_class, key=lambda c: (-len(by_class[c]), c))
        largest = largest[:n_classes] if n_classes else largest
        rng = random.Random(seed)
        paths, labels = [], []
        for cls in largest:
            members = by_class[cls]
            chosen = rng.sample(members, min(per_class, len(members))) if per_class else members
            for name in chosen:
                path = dest / cls / name.rsplit("/", 1)[1]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(z.read(name))
                paths.append(path)
                labels.append(cls)
    return paths, labels
