"""Any timm backbone as a deep feature set: registration, strict loading, the flow end to end.

The backbone is timm's small ``test_resnet`` with seeded random weights saved to
a local file (no download): what matters here is the plumbing, not the accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecotaxa_core.features import get_extractor
from ecotaxa_core.features.backbones import (BackboneError, TimmBackboneExtractor,
                                             read_backbones, register_backbone)
from ecotaxa_core.store.feature_store import FeatureSetMismatch
from extractor_conformance import ExtractorConformance
from test_features_flow import make_project, ndsb_images, point_flows_at

MODEL = "test_resnet"


def save_weights(path: Path, seed: int = 0, model: str = MODEL, head: bool = True) -> Path:
    import timm
    import torch

    torch.manual_seed(seed)
    net = timm.create_model(model, pretrained=False)
    if not head:
        net.reset_classifier(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    else:
        torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("backbones")
    register_backbone(folder / "backbones.toml", "tiny", MODEL,
                      save_weights(folder / "tiny.pth"))
    return folder / "backbones.toml"


class TestTimmBackboneConformance(ExtractorConformance):
    extractor_name = "deep_tiny"

    @pytest.fixture(scope="class")
    @classmethod
    def kwargs(cls, registry):
        return {"input_size": 64, "backbones": {k: v.to_dict()
                                                for k, v in read_backbones(registry).items()}}


def test_registration_records_what_the_file_holds(registry, tmp_path):
    spec = read_backbones(registry)["deep_tiny"]
    assert (spec.model, Path(spec.weights).name, len(spec.sha256)) == (MODEL, "tiny.pth", 64)
    ex = get_extractor("deep_tiny", input_size=64, backbones={"deep_tiny": spec})
    assert isinstance(ex, TimmBackboneExtractor)
    assert len(ex.feature_names) == spec.n_features == ex.model.num_features
    # The normalisation is timm's for the model when none is given.
    assert spec.mean == pytest.approx(ex.model.pretrained_cfg["mean"])
    settings = ex.producer()["settings"]
    assert settings["weights_sha256"] == spec.sha256 and settings["model"] == f"timm {MODEL}"

    # Files with or without their classifier, in either format, fit the model.
    path = tmp_path / "backbones.toml"
    for name, weights in [("headless", save_weights(tmp_path / "h.pth", head=False)),
                          ("safe", save_weights(tmp_path / "w.safetensors"))]:
        added = register_backbone(path, name, MODEL, weights, mean=(0.5, 0.5, 0.5),
                                  std=(0.25, 0.25, 0.25))
        assert added.n_features == spec.n_features
    assert sorted(read_backbones(path)) == ["deep_headless", "deep_safe"]
    assert read_backbones(path)["deep_safe"].std == (0.25, 0.25, 0.25)


def test_registration_refuses_what_would_fail_later(tmp_path):
    path = tmp_path / "backbones.toml"
    other = save_weights(tmp_path / "other.pth", model="test_efficientnet")
    with pytest.raises(BackboneError, match="does not fit timm model 'test_resnet'"):
        register_backbone(path, "wrong", MODEL, other)
    with pytest.raises(BackboneError, match="timm has no model 'no_such_net'"):
        register_backbone(path, "x", "no_such_net", other)
    with pytest.raises(BackboneError, match="does not exist"):
        register_backbone(path, "x", MODEL, tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(BackboneError, match="not a weights file"):
        register_backbone(path, "x", MODEL, garbage)
    with pytest.raises(BackboneError, match="lower-case"):
        register_backbone(path, "Bad-Name", MODEL, other)
    with pytest.raises(BackboneError, match="effnetlite0"):
        register_backbone(path, "effnetlite0", MODEL, other)
    assert not path.exists()  # nothing registered
    register_backbone(path, "ok", MODEL, save_weights(tmp_path / "ok.pth"))
    with pytest.raises(BackboneError, match="registered already"):
        register_backbone(path, "ok", MODEL, save_weights(tmp_path / "ok2.pth", seed=1))


def test_a_bad_backbones_file_is_named(tmp_path):
    path = tmp_path / "backbones.toml"
    path.write_text('[tiny]\nmodel = "test_resnet"\nweights = 3\n')
    with pytest.raises(BackboneError, match=rf"{path}: backbone \[tiny\] needs weights"):
        read_backbones(path)
    path.write_text("[tiny\n")
    with pytest.raises(BackboneError, match=str(path)):
        read_backbones(path)
    assert read_backbones(tmp_path / "absent.toml") == {}


def test_replaced_weights_are_refused_on_load(tmp_path, ndsb_subset):
    path = tmp_path / "backbones.toml"
    weights = save_weights(tmp_path / "w.pth")
    spec = register_backbone(path, "tiny", MODEL, weights)
    save_weights(weights, seed=1)  # same path, other weights
    ex = get_extractor("deep_tiny", input_size=64, backbones={"deep_tiny": spec})
    with pytest.raises(BackboneError, match="changed since it was registered"):
        ex.extract(ndsb_images(ndsb_subset, 1, n_classes=1))


def test_features_flow_fills_a_registered_backbone_and_its_pca(sqlite_instance, ndsb_subset,
                                                                prefect_server, monkeypatch,
                                                                tmp_path):
    from flows.features import features_flow

    inst = sqlite_instance
    registry = inst.settings.backbones_path
    register_backbone(registry, "tiny", MODEL, save_weights(tmp_path / "tiny.pth"))
    point_flows_at(monkeypatch, inst, dask_n_workers="1", chunk_size="4", deep_input_size="64")
    images = ndsb_images(ndsb_subset, 3)  # 12 objects
    project_id, ids = make_project(inst, images)

    summary = features_flow(project_id=project_id, feature_sets=["deep_tiny"])
    sets = summary["feature_sets"]
    assert sets["deep_tiny"]["objects"] == 12
    assert sets["deep_tiny_pca50"]["objects"] == 12
    assert "deep_effnetlite0" not in sets and "morpho" not in sets
    spec = read_backbones(registry)["deep_tiny"]
    # The instance's default views: the mean over the 4 flips.
    direct = get_extractor("deep_tiny", input_size=64, backbones={"deep_tiny": spec}, views=4)
    stored = inst.features.read(project_id, "deep_tiny", ids)
    np.testing.assert_allclose(stored.values, direct.extract(images), atol=1e-4, rtol=1e-3)
    assert inst.features.attrs(project_id, "deep_tiny") == direct.producer()

    # Another input size is another producer: refused, until recomputed on purpose.
    monkeypatch.setenv("ECOTAXA_DEEP_INPUT_SIZE", "96")
    with pytest.raises(FeatureSetMismatch, match="--recompute"):
        features_flow(project_id=project_id, feature_sets=["deep_tiny"])
    summary = features_flow(project_id=project_id, feature_sets=["deep_tiny"], recompute=True)
    assert summary["feature_sets"]["deep_tiny"]["objects"] == 12
    assert inst.features.attrs(project_id, "deep_tiny")["settings"]["input_size"] == 96
    assert sorted(inst.features.object_ids(project_id, "deep_tiny").tolist()) == sorted(ids)
    pca = inst.features.attrs(project_id, "deep_tiny_pca50")
    assert pca["settings"]["source_producer"]["settings"]["input_size"] == 96


def save_bottleneck_weights(path: Path, width: int = 12, seed: int = 0) -> Path:
    """A fine-tuned feature part: test_resnet + Linear(n, width) + ReLU, as safetensors."""
    import timm
    import torch
    from safetensors.torch import save_file

    from ecotaxa_core.features.backbones import with_bottleneck

    torch.manual_seed(seed)
    net = timm.create_model(MODEL, pretrained=False)
    net.reset_classifier(0)
    net = with_bottleneck(net, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def test_a_fine_tuned_backbone_carries_its_bottleneck_and_input_size(tmp_path, ndsb_subset):
    path = tmp_path / "backbones.toml"
    register_backbone(path, "plain", MODEL, save_weights(tmp_path / "plain.pth"))
    before = path.read_text()
    weights = save_bottleneck_weights(tmp_path / "tuned.safetensors")
    spec = register_backbone(path, "tuned", MODEL, weights, bottleneck=12, input_size=48,
                             fine_tuned_from="test_resnet, seeded",
                             training_record=str(tmp_path / "tuned.json"))
    assert (spec.n_features, spec.bottleneck, spec.input_size) == (12, 12, 48)
    specs = read_backbones(path)
    assert specs["deep_tuned"] == spec
    # The table of a backbone without bottleneck is written as before.
    assert before.split("[plain]")[1].strip() in path.read_text()
    assert specs["deep_plain"].bottleneck is None and "bottleneck" not in specs["deep_plain"].to_dict()

    ex = get_extractor("deep_tuned", input_size=224, backbones={"deep_tuned": spec})
    assert ex.input_size == 48  # the size it was trained at, whatever the setting says
    rows = ex.extract(ndsb_images(ndsb_subset, 2, n_classes=2))
    assert rows.shape == (4, 12) and (rows >= 0).all()  # after the ReLU
    settings = ex.producer()["settings"]
    assert settings["bottleneck"] == {"width": 12, "activation": "relu"}
    assert settings["fine_tuned_from"] == "test_resnet, seeded"
    plain = get_extractor("deep_plain", input_size=64, backbones=specs).producer()["settings"]
    assert "bottleneck" not in plain and "fine_tuned_from" not in plain

    # Strict: a file without the bottleneck, or of another width, is refused.
    with pytest.raises(BackboneError, match="with a 12-unit bottleneck"):
        register_backbone(path, "nobottle", MODEL, save_weights(tmp_path / "x.pth"),
                          bottleneck=12)
    with pytest.raises(BackboneError, match="does not fit"):
        register_backbone(path, "wide", MODEL, weights, bottleneck=16)
    with pytest.raises(BackboneError, match="does not fit"):
        register_backbone(path, "headless", MODEL, weights)
    assert sorted(read_backbones(path)) == ["deep_plain", "deep_tuned"]


def test_bad_fine_tuning_keys_are_named(tmp_path):
    path = tmp_path / "backbones.toml"
    table = '[t]\nmodel = "test_resnet"\nweights = "/w.pth"\nsha256 = "ab"\nn_features = 8\n'
    for line, message in [("bottleneck = 0", r"bottleneck must be an integer of at least 1"),
                          ("input_size = 16", r"input_size must be an integer of at least 32"),
                          ('input_size = "128"', r"input_size must be an integer"),
                          ("fine_tuned_from = 3", r"fine_tuned_from must be a string"),
                          ("epochs = 3", r"has unknown keys epochs")]:
        path.write_text(table + line + "\n")
        with pytest.raises(BackboneError, match=rf"{path}: backbone \[t\] {message}"):
            read_backbones(path)
