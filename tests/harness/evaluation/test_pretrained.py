"""harness.models.pretrained: checkpoints in the official MagFace layouts (DataParallel and DDP) and insightface's
arcface_torch layout, written here from this project's own network, load and reproduce that network's output with
the release's BatchNorm eps; wrong formats, depths, keys and shapes are errors naming them."""
import pytest
import torch
from torch import nn

from harness.models import iresnet
from harness.models.iresnet import LAYERS
from harness.models.pretrained import FORMATS, load_pretrained, release_key_to_suite, suite_key_to_release

pytestmark = pytest.mark.slow   # builds and saves iResNet-18s


@pytest.fixture(scope="module")
def network():
    """An iresnet18 with random weights and BatchNorm statistics, as a released network would have."""
    torch.manual_seed(0)
    model = iresnet("iresnet18", 512)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def reference_output(model, eps, x):
    """The original network: the same weights with the release's BatchNorm eps."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.eps = eps
    with torch.no_grad():
        return model(x)


def release_state(model):
    layers = LAYERS["iresnet18"]
    return {suite_key_to_release(k, layers): v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layout", ["magface_dp", "magface_ddp", "insightface"])   # DP: the whole model wrapped
def test_released_layouts_reproduce_the_network(network, layout, tmp_path):
    state = release_state(network)
    if layout == "insightface":
        payload, fmt = state, "insightface"
    else:
        # the official trainers save the whole model: the backbone beside the classifier, and the optimizer
        prefix, fc = (("module.features.", "module.fc.weight") if layout == "magface_dp"
                      else ("features.module.", "parallel_fc.weight"))
        payload = {"state_dict": {**{prefix + k: v for k, v in state.items()}, fc: torch.zeros(10, 512)},
                   "epoch": 20, "arch": "iresnet18", "optimizer": {"state": {}, "param_groups": []}}
        fmt = "magface"
    assert "conv1.weight" in state and "layer4.1.bn3.running_var" in state and "stem.0.weight" not in state
    path = tmp_path / "release.pth"
    torch.save(payload, path)
    loaded = load_pretrained(str(path), fmt, "iresnet18")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        got = loaded(x)
    want = reference_output(network, FORMATS[fmt]["eps"], x)
    assert not loaded.training and torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert loaded.preprocessing["channels"] == ("BGR" if fmt == "magface" else "RGB")
    assert loaded.features.weight.requires_grad == (fmt == "magface")
    assert loaded.dropped_keys == ([] if fmt == "insightface" else [fc])


def test_key_mapping_round_trips_for_every_depth():
    for name, layers in LAYERS.items():
        keys = iresnet(name, 8, input_size=16).state_dict().keys()
        assert all(release_key_to_suite(suite_key_to_release(k, layers), layers) == k for k in keys)
    assert suite_key_to_release("body.2.conv1.weight", LAYERS["iresnet18"]) == "layer2.0.conv1.weight"


def test_wrong_format_depth_keys_and_shapes_are_named(network, tmp_path):
    state = release_state(network)
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"state_dict": {"module.features." + k: v for k, v in state.items()}}, wrapped)
    with pytest.raises(ValueError, match="is a dict with 'state_dict'"):
        load_pretrained(str(plain), "magface", "iresnet18")
    with pytest.raises(ValueError, match="use format='magface'"):
        load_pretrained(str(wrapped), "insightface", "iresnet18")
    with pytest.raises(ValueError, match=r"\(2, 2, 2, 2\) blocks per stage, not iresnet50"):
        load_pretrained(str(plain), "insightface", "iresnet50")
    with pytest.raises(ValueError, match="format='arcface'"):
        load_pretrained(str(plain), "arcface", "iresnet18")
    broken = dict(state)
    broken.pop("fc.weight")
    broken["extra.weight"] = torch.zeros(1)
    broken["features.bias"] = torch.zeros(256)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError, match=r"missing \['fc.weight'\], unknown \['extra.weight'\], shape mismatches "
                                         r"\['features.bias \(256,\) vs \(512,\)'\]"):
        load_pretrained(str(path), "insightface", "iresnet18")
