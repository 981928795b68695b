"""Fine-tuning: augmentations, class weights, early stopping, refusals, the flow end to end.

The learning set is real: 3 NDSB classes x 20 images, stored in the vault and
validated; EfficientNet-Lite0 (the packaged ImageNet weights) is fine-tuned at
64 px for a couple of epochs, which is about the plumbing, not the accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select, update

from ecotaxa_core.db.models import Image, Job, Object
from ecotaxa_core.features import ImageReadError, get_extractor
from ecotaxa_core.features.backbones import read_backbones
from ecotaxa_core.file_digest import file_sha256
from ecotaxa_core.learn.augmentation import (NO_AUGMENTATION, AugmentationSettings,
                                             affine_matrices, augment_batch)
from ecotaxa_core.learn.fine_tuning import (BACKBONES_DIR, EarlyStopping, FineTuningError,
                                            FineTuningSettings, class_weights,
                                            _CosineToPlan, epochs_within_budget, fine_tune)
from ecotaxa_core.taxonomy import get_or_create_taxon
from test_features_flow import make_project, ndsb_images, point_flows_at

TINY = dict(input_size=64, epochs=2, batch_size=16, validation_fraction=0.25, device="cpu")


def validated_project(inst, ndsb_subset, per_class: int = 20, n_classes: int = 3):
    """A project whose objects are real NDSB images, validated under their class."""
    images = ndsb_images(ndsb_subset, per_class, n_classes=n_classes)
    project_id, ids = make_project(inst, images, title="fine-tuning")
    with inst.sessions.begin() as s:
        taxa = {}
        for object_id, path in zip(ids, images):
            cls = path.parent.name
            if cls not in taxa:
                taxa[cls] = get_or_create_taxon(s, cls).id
            s.execute(update(Object).where(Object.id == object_id)
                      .values(status="validated", taxon_id=taxa[cls]))
    return project_id, ids, images, taxa


def nothing_left(inst) -> None:
    """No backbone registered and no file in the fine-tuned backbones' folder."""
    assert read_backbones(inst.settings.backbones_path) == {}
    folder = inst.settings.models_dir / BACKBONES_DIR
    assert not folder.exists() or sorted(folder.iterdir()) == []


# -- augmentations --------------------------------------------------------------------
def test_augmentations_keep_shape_dtype_and_flips_are_exact():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
    as_float = images.permute(0, 3, 1, 2).float()
    out = augment_batch(images, AugmentationSettings(), torch.Generator().manual_seed(1))
    assert out.shape == (16, 3, 16, 16) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert float(out.min()) >= 0 and float(out.max()) <= 255

    assert torch.equal(augment_batch(images, NO_AUGMENTATION, torch.Generator()), as_float)
    flips = AugmentationSettings(flip_horizontal=True, flip_vertical=False,
                                 max_rotation_deg=0, max_zoom=1, max_shear_deg=0)
    out = augment_batch(images, flips, torch.Generator().manual_seed(3))
    flipped = [bool(torch.equal(o, a.flip(2))) for o, a in zip(out, as_float)]
    kept = [bool(torch.equal(o, a)) for o, a in zip(out, as_float)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16
    # The same seed draws the same augmentations.
    again = augment_batch(images, AugmentationSettings(), torch.Generator().manual_seed(1))
    assert torch.equal(again, augment_batch(images, AugmentationSettings(),
                                            torch.Generator().manual_seed(1)))


def test_a_quarter_turn_is_exact_and_the_border_fills_the_background():
    import torch.nn.functional as F

    images = torch.full((4, 12, 12, 3), 200, dtype=torch.uint8)
    images[:, 2:5, 3:9] = 0  # a dark organism near the top
    x = images.permute(0, 3, 1, 2).float()
    theta = affine_matrices(torch.full((4,), 90.0), torch.ones(4), torch.zeros(4))
    turned = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False),
                           padding_mode="border", align_corners=False)
    # Counter-clockwise as displayed: the organism goes from the top to the left side.
    assert torch.allclose(turned, x.rot90(1, (2, 3)), atol=1e-3)
    assert float(turned[0, 0, 3:9, 2:5].max()) < 1

    zoom_out = AugmentationSettings(flip_horizontal=False, flip_vertical=False,
                                    max_rotation_deg=0, max_zoom=2, max_shear_deg=0)
    out = augment_batch(images, zoom_out, torch.Generator().manual_seed(0))
    assert float(out[:, :, -1, -1].min()) == 200  # what enters the frame is background
    assert not torch.equal(out, x)


def test_class_weights_as_documented():
    y = np.array([0] * 100 + [1] * 10 + [2])
    np.testing.assert_allclose(class_weights(y, 3, power=0.0), [1, 1, 1])
    balanced = class_weights(y, 3, power=1.0)
    np.testing.assert_allclose(balanced, len(y) / (3 * np.array([100, 10, 1])))
    mild = class_weights(y, 3, power=0.25)
    assert np.average(mild[y]) == pytest.approx(1.0)
    assert mild[1] / mild[0] == pytest.approx(10 ** 0.25)
    with pytest.raises(FineTuningError, match=r"class indices \[1\] have no object"):
        class_weights(np.array([0, 2]), 3, power=0.25)


def test_early_stopping_waits_patience_epochs():
    stop = EarlyStopping(patience=2, min_delta=0.01)
    losses = [1.0, 0.9, 0.895, float("nan"), 0.5]  # 0.895 is no gain by 0.01, NaN none
    decisions = [stop.update(epoch, loss) for epoch, loss in enumerate(losses, 1)]
    assert decisions == [False, False, False, True, False]
    assert (stop.best_epoch, stop.best_loss) == (5, 0.5)  # a later gain still counts


def test_settings_are_checked():
    with pytest.raises(FineTuningError, match="device must be auto, cpu, cuda or cuda:N"):
        FineTuningSettings(device="tpu")
    with pytest.raises(FineTuningError, match="input_size must be at least 32"):
        FineTuningSettings(input_size=16)
    with pytest.raises(FineTuningError, match="validation_fraction"):
        FineTuningSettings(validation_fraction=1.0)


# -- on a real project ----------------------------------------------------------------
def test_fine_tune_stops_early_and_on_its_time_budget(sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    project_id, *_ = validated_project(inst, ndsb_subset, per_class=10)
    # No epoch can beat the first by 100: patience 1 stops after epoch 2.
    result = fine_tune(inst, project_id, "patient",
                       FineTuningSettings(**{**TINY, "epochs": 5}, patience=1, min_delta=100.0))
    record = result.record
    assert (record["stopped"], record["best_epoch"], len(record["history"])) == (
        "patience", 1, 2)
    assert result.record["validation"]["log_loss"] == pytest.approx(
        record["history"][0]["val_loss"], abs=1e-5)

    # A budget already spent stops cleanly after the first epoch, and the result counts.
    result = fine_tune(inst, project_id, "hurried",
                       FineTuningSettings(**{**TINY, "epochs": 5}, time_budget_s=1e-3))
    assert (result.record["stopped"], len(result.record["history"])) == ("time_budget", 1)
    assert sorted(read_backbones(inst.settings.backbones_path)) == ["deep_hurried",
                                                                    "deep_patient"]


def test_refusals_leave_nothing(sqlite_instance, ndsb_subset, tmp_path):
    inst = sqlite_instance
    project_id, ids, images, taxa = validated_project(inst, ndsb_subset, per_class=5)
    settings = FineTuningSettings(**TINY)
    one = list(taxa.values())[:1]
    with pytest.raises(FineTuningError, match="at least 2 categories; project .* 5 of 1 cat"):
        fine_tune(inst, project_id, "one", settings, categories=one)
    with pytest.raises(FineTuningError, match="too few objects to hold out a validation split"):
        fine_tune(inst, project_id, "few", settings, max_per_category=3)
    with pytest.raises(FineTuningError, match="lower-case"):
        fine_tune(inst, project_id, "Bad Name", settings)
    with pytest.raises(FineTuningError, match="device must be"):
        FineTuningSettings(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(FineTuningError, match="torch sees no CUDA GPU here"):
            fine_tune(inst, project_id, "gpu", FineTuningSettings(**{**TINY, "device": "cuda"}))
    with pytest.raises(FineTuningError, match="neither 'effnetlite0' nor a backbone"):
        fine_tune(inst, project_id, "based", FineTuningSettings(**TINY, base="resnet"))
    nothing_left(inst)

    fine_tune(inst, project_id, "taken", FineTuningSettings(**{**TINY, "epochs": 1}))
    registered = read_backbones(inst.settings.backbones_path)
    files = sorted((inst.settings.models_dir / BACKBONES_DIR).iterdir())
    with pytest.raises(FineTuningError, match="'taken' is registered already"):
        fine_tune(inst, project_id, "taken", settings)
    assert read_backbones(inst.settings.backbones_path) == registered
    assert sorted((inst.settings.models_dir / BACKBONES_DIR).iterdir()) == files


def test_interrupted_runs_leave_nothing(sqlite_instance, ndsb_subset):
    inst = sqlite_instance
    project_id, ids, images, taxa = validated_project(inst, ndsb_subset, per_class=8)
    settings = FineTuningSettings(**{**TINY, "validation_fraction": 0.5})

    # Interrupted in the middle of training (Ctrl-C arrives while an epoch is logged).
    def interrupt(message: str) -> None:
        if message.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fine_tune(inst, project_id, "stopped", settings, log=interrupt)
    nothing_left(inst)

    # The backbones file turns bad during training: the files written are removed again.
    def spoil(message: str) -> None:
        if message.startswith("epoch 2/"):
            inst.settings.backbones_path.write_text("[broken\n")

    with pytest.raises(Exception, match=str(inst.settings.backbones_path)):
        fine_tune(inst, project_id, "spoilt", settings, log=spoil)
    inst.settings.backbones_path.unlink()
    nothing_left(inst)

    # An image missing from the vault: refused, naming it, before any training.
    with inst.sessions() as s:
        rel = s.scalar(select(Image.file_path).where(Image.object_id == ids[3]))
    missing = inst.vault.path(rel)
    missing.unlink()
    with pytest.raises(ImageReadError, match=str(missing)):
        fine_tune(inst, project_id, "holes", settings)
    nothing_left(inst)


def test_fine_tune_flow_registers_a_backbone_that_feeds_a_classifier(
        sqlite_instance, ndsb_subset, prefect_server, monkeypatch):
    from flows.fine_tune import fine_tune_flow
    from ecotaxa_core.learn.training import train_model

    inst = sqlite_instance
    project_id, ids, images, taxa = validated_project(inst, ndsb_subset)
    # One view (no flip averaging), so the saved head applies to the stored vectors as
    # it did in training.
    point_flows_at(monkeypatch, inst, dask_n_workers="1", chunk_size="16",
                   deep_input_size="224", deep_views="1")
    # "Appear as": the third category is learned as the first (as training does).
    first, second, third = sorted(taxa.values())
    summary = fine_tune_flow(project_id=project_id, name="tuned", epochs=2, input_size=64,
                             device="cpu", batch_size=16, validation_fraction=0.25,
                             appear_as={third: first}, compute_features=True)
    json.dumps(summary)
    assert (summary["feature_set"], summary["n_classes"], summary["epochs_run"]) == (
        "deep_tuned", 2, 2)
    assert (summary["n_train"], summary["n_validation"]) == (45, 15)
    assert summary["train_images_per_s"] > 0

    spec = read_backbones(inst.settings.backbones_path)["deep_tuned"]
    weights = Path(spec.weights)
    assert weights.parent == inst.settings.models_dir / BACKBONES_DIR
    assert spec.sha256 == file_sha256(weights) and weights.name == f"tuned-{spec.sha256[:12]}.safetensors"
    assert (spec.bottleneck, spec.n_features, spec.input_size) == (600, 600, 64)
    assert spec.model == "tf_efficientnet_lite0" and "ImageNet" in spec.fine_tuned_from
    record = json.loads(Path(spec.training_record).read_text())
    assert [c["taxon_id"] for c in record["classes"]] == [first, second]
    assert record["learning_set"]["appear_as"] == {str(third): first}
    assert [r["epoch"] for r in record["history"]] == [1, 2]
    assert all(r["images_per_s"] > 0 and r["val_loss"] > 0 for r in record["history"])
    assert record["weights"]["sha256"] == spec.sha256
    assert record["settings"]["input_size"] == 64 and record["stopped"] == "epochs"

    # The features flow computed deep_tuned at the training input size (not 224),
    # equal to a direct extraction.
    assert summary["features"]["feature_sets"]["deep_tuned"]["objects"] == 60
    direct = get_extractor("deep_tuned", input_size=224, backbones={"deep_tuned": spec},
                           views=1)
    assert direct.input_size == 64
    stored = inst.features.read(project_id, "deep_tuned", ids)
    np.testing.assert_allclose(stored.values, direct.extract(images), atol=1e-4, rtol=1e-3)
    assert inst.features.attrs(project_id, "deep_tuned")["settings"]["bottleneck"] == {
        "width": 600, "activation": "relu"}

    # The saved head on the stored vectors gives back the recorded validation loss:
    # training and extraction saw the same images the same way.
    from safetensors.torch import load_file

    head = load_file(record["weights"]["head"])
    val_ids = record["learning_set"]["validation_object_ids"]
    features = torch.from_numpy(inst.features.read(project_id, "deep_tuned", val_ids).values)
    logits = features @ head["weight"].T + head["bias"]
    with inst.sessions() as s:
        truth = dict(s.execute(select(Object.id, Object.taxon_id)
                               .where(Object.id.in_(val_ids))).all())
    classes = [c["taxon_id"] for c in record["classes"]]
    learned_as = {first: first, second: second, third: first}
    target = torch.tensor([classes.index(learned_as[truth[i]]) for i in val_ids])
    loss = torch.nn.functional.cross_entropy(logits, target).item()
    assert loss == pytest.approx(record["validation"]["log_loss"], abs=2e-3)

    # The 600-d vectors train an ordinary classifier.
    model = train_model(inst, project_id, "deep_logreg", feature_sets=["deep_tuned"], n_jobs=1)
    assert model.feature_sets == ["deep_tuned"] and model.metrics["n_test"] > 0
    with inst.sessions() as s:
        kinds = [(j.kind, j.state) for j in s.scalars(
            select(Job).where(Job.project_id == project_id).order_by(Job.id))]
    assert kinds == [("fine_tune", "done"), ("features", "done")]


def test_fine_tune_command_refuses_clearly(tmp_path, prefect_api_url):
    from test_cli import run_cli

    home = tmp_path / "home"
    run_cli(["init"], home)
    assert "--compute-features" in run_cli(["fine-tune", "--help"], home).stdout
    run_cli(["project", "create", "P"], home)
    refused = run_cli(["fine-tune", "1", "--name", "mine", "--device", "cpu", "--json"], home,
                      check=False, prefect_api_url=prefect_api_url)
    assert refused.returncode == 1
    assert json.loads(refused.stdout) == {
        "error": "EmptyLearningSet",
        "message": "no validated object in project 1; validate some objects first"}
    bad = run_cli(["fine-tune", "1", "--name", "mine", "--device", "tpu"], home, check=False,
                  prefect_api_url=prefect_api_url)
    assert bad.returncode == 1 and "device must be auto, cpu, cuda or cuda:N" in bad.stderr
    unpaired = run_cli(["fine-tune", "1", "--name", "mine", "--appear-as", "Copepoda"], home,
                       check=False, prefect_api_url=prefect_api_url)
    assert unpaired.returncode == 1 and "--appear-as needs CATEGORY=TARGET" in unpaired.stderr
    assert not (home / "backbones.toml").exists()
    assert not (home / "models" / BACKBONES_DIR).exists()


@pytest.mark.parametrize("done, most, elapsed, epoch_s, budget, expected", [
    (1, 15, 100.0, 100.0, 1000.0, 10),   # 9 more fit
    (1, 5, 100.0, 100.0, 1000.0, 5),     # never more than the settings' epochs
    (3, 10, 990.0, 300.0, 1000.0, 3),    # none more fits: stop now
    (2, 10, 1500.0, 700.0, 1000.0, 2),   # already over: never fewer than done
    (4, 8, 400.0, 100.0, 649.0, 6),      # 249 s left: two whole epochs
])
def test_the_epoch_plan_fits_the_time_budget(done, most, elapsed, epoch_s, budget, expected):
    assert epochs_within_budget(done, most, elapsed, epoch_s, budget) == expected


def test_the_learning_rate_decays_to_the_plan_and_never_rises_again():
    schedule = _CosineToPlan(warmup_steps=2, total_steps=12)
    rates = [schedule(step) for step in range(6)]
    assert rates[:2] == [0.5, 1.0] and rates[2] == 1.0  # warm-up, then the decay starts
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))
    schedule.total_steps = 6  # the budget shrinks the plan: the decay ends at step 6
    assert schedule(6) == pytest.approx(0.01)
    schedule.total_steps = 100  # it grows again: the rate holds, never rises
    assert [schedule(s) for s in (7, 8)] == [pytest.approx(0.01)] * 2
