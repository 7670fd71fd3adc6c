import numpy as np
import pytest
import torch

from services.models.click_net import build, export_torchscript
from services.models.click_training import segmentation_loss

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("height,width", [(400, 400), (321, 481)])
def test_output_shape(height, width):
    model = build({"in_channels": 7}).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 7, height, width))
    assert out.shape == (1, 1, height, width)


def test_tiny_overfit_loss_falls():
    torch.manual_seed(0)
    model = build({"in_channels": 6})
    x = torch.randn(4, 6, 64, 64)
    gt = torch.zeros(4, 1, 64, 64)
    gt[:, :, 16:48, 16:48] = 1
    x[:, 3] = gt[:, 0]  # positive-click channel marks the object: learnable
    valid = torch.ones_like(gt)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(30):
        loss = segmentation_loss(model(x), gt, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_torchscript_export_matches(tmp_path):
    model = build({"in_channels": 7}).eval()
    path = export_torchscript(model, tmp_path / "model.pt", size=64)
    loaded = torch.jit.load(str(path))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 7, 321, 481)).astype(np.float32))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
