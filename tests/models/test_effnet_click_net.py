import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from services.models import effnet_click_net as E
from services.models.click_models import build, load
from services.models.click_training import segmentation_loss

pytestmark = pytest.mark.unit

IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_weights_file_loads_every_tensor_with_matching_shapes():
    state = E.pretrained_state_dict()
    model = E.EfficientNetLite0()
    own = model.state_dict()
    assert len(state) == 296
    assert set(state) == set(own)
    assert all(state[k].shape == own[k].shape for k in state)


def test_pretrained_classifier_sees_a_cat():
    with torch.no_grad():
        probs = E.pretrained_classifier()(_imagenet_input(data.chelsea())).softmax(1)[0]
    top = set(probs.topk(3).indices.tolist())
    assert top <= IMAGENET_CATS, top
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5


def test_click_network_starts_from_the_imagenet_encoder():
    """Fails if the encoder were left random: its weights equal the wheel's, and it classifies."""
    state = E.pretrained_state_dict()
    model = build({"arch": "effnet_lite0"})
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key
    classifier = E.EfficientNetLite0()
    head = {k: v for k, v in state.items() if k.startswith(("_conv_head", "_bn1.", "_fc"))}
    classifier.load_state_dict({**model.encoder.state_dict(), **head})
    with torch.no_grad():
        top = int(classifier.eval()(_imagenet_input(data.chelsea())).argmax())
    assert top in IMAGENET_CATS


def test_random_encoder_is_told_apart():
    random = build({"arch": "effnet_lite0"}, pretrained=False)
    state = E.pretrained_state_dict()
    assert not torch.equal(random.encoder._conv_stem.weight, state["_conv_stem.weight"])


def test_conv1s_branch_starts_at_zero_so_the_stem_is_untouched():
    model = build({"arch": "effnet_lite0"}).eval()
    x = torch.randn(2, 6, 64, 96)
    enc = model.encoder
    with torch.no_grad():
        plain = F.relu6(enc._bn0(enc._conv_stem(x[:, :3])))
        fused = model.stem(x)
        assert torch.equal(plain, fused)
        # ...and the click maps do reach the stem once the branch has weights.
        torch.nn.init.normal_(model.maps_stem[2].weight)
        assert not torch.allclose(model.stem(x), plain)


@pytest.mark.parametrize("height,width", [(256, 256), (321, 481), (40, 70)])
def test_output_shape(height, width):
    model = build({"arch": "effnet_lite0"}, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 6, height, width)).shape == (1, 1, height, width)


def test_learning_rate_groups_split_encoder_and_the_rest():
    model = build({"arch": "effnet_lite0"}, pretrained=False)
    encoder, rest = model.encoder_parameters(), model.decoder_parameters()
    assert len(encoder) + len(rest) == len(list(model.parameters()))
    assert {id(p) for p in encoder}.isdisjoint({id(p) for p in rest})
    assert any(p is model.maps_stem[0].weight for p in rest)


def test_clicks_steer_the_output_after_a_few_steps():
    torch.manual_seed(0)
    model = build({"arch": "effnet_lite0"})
    x = torch.randn(4, 6, 64, 64) * 0.1
    gt = torch.zeros(4, 1, 64, 64)
    gt[:, :, 16:48, 16:48] = 1
    x[:, 3] = gt[:, 0]  # the positive-click channel marks the object: learnable only through Conv1S
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for _ in range(25):
        loss = segmentation_loss(model(x), gt, torch.ones_like(gt))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0]


def test_torchscript_round_trip(tmp_path):
    model = build({"arch": "effnet_lite0"}, pretrained=False).eval()
    torch.nn.init.normal_(model.maps_stem[2].weight, std=0.1)
    path = E.export_torchscript(model, tmp_path / "model.pt")
    loaded = torch.jit.load(str(path))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 6, 321, 481)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_checkpoint_load_restores_weights(tmp_path):
    model = build({"arch": "effnet_lite0"}, pretrained=False)
    torch.nn.init.normal_(model.head.weight)
    config = {"arch": "effnet_lite0", "size": 256}
    torch.save({"model": model.state_dict(), "config": config}, tmp_path / "best.pt")
    loaded, loaded_config = load(tmp_path / "best.pt")
    assert loaded_config == config
    assert torch.equal(loaded.head.weight, model.head.weight)
    assert not loaded.training
