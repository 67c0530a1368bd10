"""Classifiers: local files, the embedded EfficientNet-Lite key mapping, timm names, ensembles."""

import numpy as np
import pytest
import torch

from cag_core.classifier import Classifier, combine
from cag_core.efficientnet_lite import guess_lite_architecture, lite_package_weights_path, rename_lite_keys
from cag_core.errors import CaGError, WeightsError
from cag_core.timm_classifier import classifier_from_file, embedded_classifier, timm_classifier
from cag_core.weights import load_file, save_file
from tiny import TINY_ARCH, save_tiny_classifier, tiny_classifier, tiny_timm_model


def test_architecture_from_safetensors_metadata(tmp_path):
    """A .safetensors with {'cag_arch': name} loads with no architecture given, with timm's preprocessing."""
    path = save_tiny_classifier(tmp_path / "tiny.safetensors", num_classes=7)
    classifier = classifier_from_file(path)
    assert classifier.num_classes == 7 and classifier.input_size == (160, 160)
    x = torch.rand(2, 3, 40, 50)
    resized = torch.nn.functional.interpolate(x, (160, 160), mode="bicubic")
    expected = tiny_timm_model(7)((resized - classifier.mean) / classifier.std)
    assert torch.allclose(classifier(x), expected, atol=1e-5)


def test_thousand_class_files_get_imagenet_names(tmp_path):
    """A 1000-class checkpoint gets timm's ImageNet class names."""
    path = save_tiny_classifier(tmp_path / "in1k.safetensors", num_classes=1000)
    assert classifier_from_file(path).class_names[207].startswith("golden retriever")


def test_pth_needs_an_architecture_and_loads_weights_only(tmp_path):
    """A .pth without metadata asks for the architecture; with it, it loads through weights_only."""
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny_timm_model(5).state_dict()}, path)
    with pytest.raises(CaGError, match="architecture"):
        classifier_from_file(path)
    assert classifier_from_file(path, TINY_ARCH).num_classes == 5


def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path):
    """Weights for another architecture fail with the mismatching keys named."""
    path = save_tiny_classifier(tmp_path / "tiny.safetensors")
    with pytest.raises(WeightsError, match="missing keys: .*unexpected keys"):
        classifier_from_file(path, "test_resnet")


def test_unknown_architecture_suggests_names():
    """A misspelt timm name lists close matches."""
    with pytest.raises(CaGError, match="resnet50"):
        timm_classifier("resnet-50", pretrained=False)


def test_offline_pretrained_download_says_what_to_do(monkeypatch):
    """With the hub unreachable, the error says which file to put where. Nothing is downloaded:
    the hub client is switched offline even if it was imported before HF_HUB_OFFLINE was set, and
    any socket connection fails the test."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    connections = []

    def no_network(self, address, *args):
        connections.append(address)  # timm_classifier turns any error into its sentence: count instead
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(CaGError, match="models/classifiers"):
        timm_classifier("resnet18", pretrained=True)
    assert connections == []


def test_classifier_stays_frozen_in_eval():
    """Classifiers never switch to training mode and need no parameter gradients."""
    classifier = tiny_classifier().train()
    assert not classifier.model.training
    assert not any(p.requires_grad for p in classifier.parameters())


def test_ensemble_needs_matching_classes():
    """An ensemble of classifiers with different class counts is refused."""
    with pytest.raises(CaGError, match="class counts differ"):
        combine(tiny_classifier(10), tiny_classifier(5))
    ensemble = combine(tiny_classifier(10), combine(tiny_classifier(10, seed=1), tiny_classifier(10, seed=2)), weights=[2, 1])
    assert len(ensemble.members) == 3 and ensemble.weights == (2, 1, 1)
    with pytest.raises(CaGError, match="positive sum"):
        combine(tiny_classifier(10), tiny_classifier(10), weights=[0, 0])


def test_lite_key_mapping_is_bit_identical_to_the_package_implementation():
    """Lite0's package weights in timm's architecture give the package model's exact logits."""
    from efficientnet_lite_pytorch import EfficientNet

    path = lite_package_weights_path("efficientnet-lite0")
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    state = load_file(path)
    assert guess_lite_architecture(state) == "tf_efficientnet_lite0"
    ours = embedded_classifier("efficientnet-lite0")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.model(x), reference(x))
    assert set(rename_lite_keys(state, ours.model)) == set(ours.model.state_dict())


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    image = getattr(skimage.data, name)()
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def test_embedded_lite0_recognizes_real_photos():
    """With TF-style mean/std 0.5, Lite0 sees a cat in chelsea() and espresso in coffee()."""
    lite0 = embedded_classifier("efficientnet-lite0")
    assert lite0.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    with torch.no_grad():
        cat_top5 = lite0(_photo("chelsea")).topk(5).indices[0].tolist()
        coffee_top1 = lite0(_photo("coffee")).argmax().item()
    assert {281, 282, 285} & set(cat_top5)  # tabby, tiger cat, Egyptian cat
    assert lite0.class_names[coffee_top1].startswith("espresso")


def test_loading_under_inference_mode_gives_autograd_ready_weights(tmp_path):
    """A classifier loaded inside torch.inference_mode() (as ComfyUI does) still backpropagates."""
    path = save_tiny_classifier(tmp_path / "t.safetensors")
    with torch.inference_mode():
        classifier = classifier_from_file(path)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    classifier(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_classifier_checks_mean_std():
    """A mean/std of the wrong length is refused."""
    with pytest.raises(CaGError, match="3 values"):
        Classifier(tiny_timm_model(), input_size=(32, 32), mean=(0.5,), std=(0.5,), class_names=["a"], name="x")


def test_safetensors_without_metadata_asks_for_architecture(tmp_path):
    """A plain .safetensors with no architecture anywhere says how to name one."""
    path = tmp_path / "plain.safetensors"
    save_file(tiny_timm_model().state_dict(), path)
    with pytest.raises(CaGError, match="cag_arch"):
        classifier_from_file(path)
