"""Classifier quality on the NDSB PlanktonSet sample, through the platform's own path.

Builds (once, then reuses) an instance under ``--workdir`` holding one project:
the 21,277 images of the shared NDSB zip imported as class folders (validated,
121 categories), their ``morpho`` and ``deep_effnetlite0`` features computed by
the features flow (EcoTaxa's preprocessing at ``--input-size`` px, the mean
over ``--views`` flips). Then trains
each candidate model with :func:`ecotaxa_core.learn.training.train_model`: every
candidate sees the same stratified held-out split of the learning set
(``--test-size`` of each category, ``--seed``), and prints one row per model:
accuracy, balanced accuracy, plankton precision and recall (support-weighted
over living categories when the metrics have them, else macro), log loss, and
the training time (held-out fit + final refit, this machine).

    python bench/bench_quality.py [--workdir /work/benchwork/quality] [--input-size 128] [--views 4]
        [--candidates classic_rf deep_logreg ...] [--test-size 0.2] [--seed 0]
        [--classes N --per-class M]     # a subset, for a quick look
        [--blend-trees 100]             # deep_logreg_rf's forest size (default 300)

A candidate is ``KIND`` (its default feature sets) or ``KIND:SET+SET`` (e.g.
``deep_logreg:deep_effnetlite0+morpho``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from ndsb_sample import NDSB_ZIP, extract_classes  # noqa: E402
ADMIN = "bench@localhost"


def prepare(args) -> tuple[Path, int]:
    """The instance home and the project id, built on first use."""
    from ecotaxa_core.importer import import_path
    from ecotaxa_core.instance import init_instance
    from ecotaxa_core.projects import create_project
    from ecotaxa_core.settings import Settings
    from ecotaxa_core.users import first_admin

    subset = f"_{args.classes}x{args.per_class}" if args.classes else ""
    views = "" if args.views == 1 else f"_{args.views}views"
    home = Path(args.workdir) / f"ndsb{subset}_{args.input_size}px{views}"
    ready = home / "READY"
    os.environ.update({"ECOTAXA_HOME": str(home), "ECOTAXA_DEEP_INPUT_SIZE": str(args.input_size),
                       "ECOTAXA_DEEP_VIEWS": str(args.views),
                       "ECOTAXA_DATABASE_URL": f"sqlite:///{home.resolve() / 'ecotaxa.db'}"})
    os.environ.pop("ECOTAXA_DASK_SCHEDULER_ADDRESS", None)
    if ready.exists():
        return home, int(ready.read_text())
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings()
    settings.ensure_dirs()
    inst = init_instance(settings, ADMIN, "bench-password")
    try:
        with inst.sessions.begin() as s:
            admin = first_admin(s)
            project_id = create_project(s, "NDSB PlanktonSet 1.0 (bench)", instrument="isiis",
                                        owner=admin).id
            admin_id = admin.id
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            if args.classes:
                extract_classes(Path(tmp) / "ndsb", args.classes, args.per_class, args.seed)
            source = Path(tmp) / "ndsb" if args.classes else NDSB_ZIP
            t0 = time.perf_counter()
            result = import_path(inst, project_id, source, user_id=admin_id,
                                 create_missing_taxa=True)
            print(f"import: {result.n_objects} objects in {time.perf_counter() - t0:.1f} s",
                  flush=True)
    finally:
        inst.close()
    from flows.features import features_flow

    t0 = time.perf_counter()
    summary = features_flow(project_id=project_id, feature_sets=["morpho", "deep_effnetlite0"])
    print(f"features ({args.input_size} px): {time.perf_counter() - t0:.1f} s "
          f"{ {k: v for k, v in summary.items() if k in ('computed', 'n_objects')} }", flush=True)
    ready.write_text(str(project_id))
    return home, project_id


def parse_candidate(text: str) -> tuple[str, list[str] | None]:
    kind, _, sets = text.partition(":")
    return kind, (sets.split("+") if sets else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/work/benchwork/quality")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--views", type=int, default=4, help="flips averaged (1, 2, 4, 8)")
    parser.add_argument("--candidates", nargs="+", default=[
        "classic_rf", "deep_rf", "deep_logreg", "deep_mlp",
        "deep_logreg:deep_effnetlite0+morpho", "deep_mlp:deep_effnetlite0+morpho"])
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=0, help="subset: largest N classes")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--blend-trees", type=int, default=None,
                        help="trees of deep_logreg_rf's forest (default: the platform's)")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect_", dir=args.workdir))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    home, project_id = prepare(args)

    from ecotaxa_core.instance import Instance
    from ecotaxa_core.learn.training import train_model
    from ecotaxa_core.settings import Settings

    if args.blend_trees:
        from ecotaxa_core.learn import classifiers

        classifiers.DEEP_LOGREG_RF_TREES = args.blend_trees
    inst = Instance.open(Settings())
    rows = []
    try:
        for text in args.candidates:
            kind, sets = parse_candidate(text)
            t0 = time.perf_counter()
            row = train_model(inst, project_id, kind, feature_sets=sets,
                              test_size=args.test_size, seed=args.seed)
            m = row.metrics
            rows.append((text, m, time.perf_counter() - t0))
            print(f"{text}: accuracy {m['accuracy']:.4f} in {time.perf_counter() - t0:.0f} s",
                  flush=True)
    finally:
        inst.close()

    print(f"\nNDSB ({home.name}), held-out {args.test_size:.0%} stratified, seed {args.seed}, "
          f"n_train {rows[0][1]['n_train'] if rows else '?'}, n_test "
          f"{rows[0][1]['n_test'] if rows else '?'}")
    head = (f"{'model':44s} {'acc':>6s} {'bal':>6s} {'plk P':>6s} {'plk R':>6s} "
            f"{'logloss':>7s} {'train s':>8s}")
    print(head + "\n" + "-" * len(head))
    for text, m, seconds in rows:
        prec = m.get("plankton_weighted_precision", m.get("plankton_macro_precision"))
        rec = m.get("plankton_weighted_recall", m.get("plankton_macro_recall"))
        print(f"{text:44s} {m['accuracy']:6.3f} {m['balanced_accuracy']:6.3f} {prec:6.3f} "
              f"{rec:6.3f} {m['log_loss']:7.3f} {seconds:8.0f}")


if __name__ == "__main__":
    main()
