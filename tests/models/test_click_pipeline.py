import numpy as np
import pytest
import torch
from torch import nn

from services.common.clicks import Click
from services.models import click_encoding, click_pipeline
from services.models.click_models import build
from services.models.click_pipeline import ClickPipeline

pytestmark = pytest.mark.unit


def _clicks(*clicks: Click) -> torch.Tensor:
    return torch.tensor([[c.x, c.y, int(c.positive)] for c in clicks], dtype=torch.int32).reshape(-1, 3)


class BrightPixels(nn.Module):
    """A stand-in network that segments bright pixels (from the normalised red channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x[:, 0:1]


@pytest.mark.parametrize("box,clicks", [
    ((40, 60, 120, 200), [Click(80, 100, True)]),
    ((0, 0, 300, 451), [Click(5, 5, True), Click(200, 100, False)]),
    ((250, 400, 299, 450), [Click(420, 280, True)]),
])
def test_zoom_window_is_the_numpy_zoom_crop(box, clicks):
    prev = np.zeros((300, 451), np.float32)
    y0, x0, y1, x1 = box
    prev[y0:y1, x0:x1] = 0.9
    crop = click_encoding.zoom_crop(prev.shape, clicks, prev, 256)
    window = ClickPipeline(nn.Identity()).zoom_window(300, 451, _clicks(*clicks), torch.from_numpy(prev))
    assert abs(window[2] - crop.side) <= 1
    assert abs(window[0] - crop.x0) <= 1 and abs(window[1] - crop.y0) <= 1


def test_first_click_sees_the_whole_image_padded_square():
    window = ClickPipeline(nn.Identity()).zoom_window(300, 451, _clicks(Click(1, 1, True)), torch.zeros(0))
    x0, y0, side = window
    assert (x0, side) == (0, 451)
    assert abs((y0 + side / 2) - 150) <= 0.5  # the image centred in the square


def test_encoding_matches_the_numpy_encoding_at_scale_one():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    prev = rng.random((256, 256)).astype(np.float32)
    clicks = [Click(30, 40, True), Click(200, 100, False), Click(0, 255, True)]
    expected = click_encoding.encode(image, clicks, prev, radius=5, with_prior=False)
    pipe = ClickPipeline(nn.Identity(), size=256)
    got = pipe.encode(torch.from_numpy(image), _clicks(*clicks), torch.from_numpy(prev), [0, 0, 256], 256)
    assert np.allclose(got.numpy(), expected, atol=1e-5)


def test_changed_region_is_the_part_holding_the_last_click():
    pipe = ClickPipeline(nn.Identity(), size=128)
    old = torch.zeros(128, 128)
    new = old.clone()
    new[10:30, 10:30] = 1  # changed, holds the click
    new[90:120, 90:120] = 1  # changed too, but elsewhere
    box = pipe.changed_region(new, old, torch.tensor([20, 20, 1]), [0, 0, 128])
    assert 8 <= box[0] <= 10 and 8 <= box[1] <= 10
    assert 30 <= box[2] <= 32 and 30 <= box[3] <= 32


def test_focus_pass_runs_only_when_it_zooms_in():
    pipe = ClickPipeline(nn.Identity(), size=256, focus_size=256)
    zoom = [0, 0, 1024]  # the first pass saw 1024 px at 256: a quarter of the detail
    small = pipe.focus_window(1024, 1024, [500, 500, 560, 540], zoom)
    assert small and small[2] < 256 and small[0] <= 500 and small[0] + small[2] >= 560
    assert pipe.focus_window(256, 256, [0, 0, 250, 250], [0, 0, 256]) == []


def test_focus_pass_fixes_detail_the_coarse_pass_cannot_see():
    """A 2-px-wide bright line in a 1024-px image, segmented by a stand-in network that marks bright
    pixels: at 256 px for the whole image the line blurs; the focus pass on a crop around the part the
    click changed sees it finer and brings it back."""
    image = torch.zeros(1024, 1024, 3, dtype=torch.uint8)
    image[400:600, 500:502] = 255
    thin = image[..., 0] > 0
    clicks = _clicks(Click(501, 500, True))
    ious = []
    for focus in (False, True):
        prob = ClickPipeline(BrightPixels(), size=256, focus=focus)([image], [clicks], [torch.zeros(0)])[0]
        mask = prob > 0.49
        ious.append(float((mask & thin).sum() / (mask | thin).sum()))
    assert ious[1] > ious[0] + 0.2, ious


def test_batched_requests_equal_single_ones():
    torch.manual_seed(0)
    net = build({"arch": "effnet_lite0"}, pretrained=False).eval()
    pipe = click_pipeline.from_config(net, {"size": 64, "focus_size": 64})
    rng = np.random.default_rng(1)
    images = [torch.from_numpy(rng.integers(0, 256, s + (3,), dtype=np.uint8)) for s in [(90, 120), (150, 70)]]
    prevs = [torch.zeros(0), torch.from_numpy((rng.random((150, 70)) > 0.5).astype(np.float32))]
    clicks = [_clicks(Click(50, 40, True)), _clicks(Click(30, 60, True), Click(10, 10, False))]
    with torch.inference_mode():
        batched = pipe(images, clicks, prevs)
        single = [pipe([images[i]], [clicks[i]], [prevs[i]])[0] for i in range(2)]
    for b, s, image in zip(batched, single, images):
        assert b.shape == image.shape[:2]
        assert torch.allclose(b, s, atol=1e-4)


def test_scripted_pipeline_matches_eager(tmp_path):
    torch.manual_seed(0)
    net = build({"arch": "effnet_lite0"}, pretrained=False).eval()
    torch.nn.init.normal_(net.maps_stem[2].weight, std=0.1)
    pipe = click_pipeline.from_config(net, {"size": 64})
    path = click_pipeline.export(pipe, tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    image = np.random.default_rng(2).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    prev = np.zeros((100, 140), np.float32)
    prev[20:60, 30:90] = 0.8
    clicks = [Click(50, 40, True), Click(100, 80, False)]
    eager = click_pipeline.segmenter(pipe, image)(clicks, prev)
    compiled = click_pipeline.segmenter(scripted, image)(clicks, prev)
    assert eager.shape == (100, 140)
    assert np.allclose(eager, compiled, atol=1e-4)


def _model_folder(tmp_path, refine: str, interface: str = "pipeline"):
    """A pipeline model folder like the shipped one: the BrightPixels pipeline scripted, its parameters."""
    folder = tmp_path / f"m-{refine}-{interface}"
    click_pipeline.export(ClickPipeline(BrightPixels(), size=64), folder / "1" / "model.pt")
    (folder / "config.pbtxt").write_text("\n".join(
        f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
        for k, v in (("interface", interface), ("refine", refine))) + "\n")
    return folder


def test_served_segmenters_run_a_model_folder_as_its_config_says(tmp_path):
    from services.models import grabcut

    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, (90, 120, 3), dtype=np.uint8)
    image[20:70, 30:90, 0] = 250  # a bright red object on a dark background
    image[30:40, 10:20, 0] = 200  # and a second bright patch that the colour model may cut away
    clicks = [Click(60, 45, True)]
    scripted = torch.jit.load(str(_model_folder(tmp_path, "none") / "1" / "model.pt"))
    network = click_pipeline.segmenter(scripted, image)(clicks, None)

    plain = click_pipeline.served_segmenters(_model_folder(tmp_path, "none"))(image)(clicks, None)
    np.testing.assert_allclose(plain, network, atol=1e-6)
    cut = click_pipeline.served_segmenters(_model_folder(tmp_path, "grabcut"))(image)(clicks, None)
    assert set(np.unique(cut)) <= {0.0, 1.0} and not np.allclose(cut, network, atol=0.1)
    assert (cut == grabcut.refine(image, network, clicks)).mean() > 0.99  # OpenCV's k-means draws at random
    with pytest.raises(ValueError, match="interface"):
        click_pipeline.served_segmenters(_model_folder(tmp_path, "none", interface="encoding"))
    with pytest.raises(ValueError, match="refine"):
        click_pipeline.served_segmenters(_model_folder(tmp_path, "crf"))
