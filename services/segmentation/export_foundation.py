"""Export a SAM / SAM 2 checkpoint the user brings into two Triton model folders (ONNX).

    python -m services.segmentation.export_foundation --family sam --variant vit_b \\
        --checkpoint sam_vit_b_01ec64.pth --out deploy/triton/models

Runs in its own virtual environment (``make sam-setup``: the official ``segment-anything`` / ``sam2``
packages need torch 2.14.1 + torchvision 0.29.1, which do not load beside the project's torch); Triton
serves the ONNX graphs without these packages. Writes ``<name>_encoder`` (the image, once per session ->
image embedding; SAM 2 also its two high-resolution feature maps) and ``<name>_decoder`` (per click: the
embedding, points with labels, an optional box as two corner points, the previous low-resolution mask
logits -> new low-resolution logits and the predicted IoU). Each folder has ``config.pbtxt`` (CPU, the
Python backend running onnxruntime), ``configs/gpu.pbtxt`` (NVIDIA's native onnxruntime backend on GPU),
``1/model.onnx``, ``1/model.py`` and ``1/export.json`` (family, variant, checkpoint digest, versions).

Geometry stays in the service (``services/segmentation/triton_foundation.py``, from the configs'
parameters): SAM resizes the long side to 1024 and pads, SAM 2 stretches to 1024 x 1024; both decoders
return 256 x 256 logits that the service upsamples to the image (kept batchable across image sizes).

The architecture is the package's own (``_build_sam`` / ``build_sam2`` with the package's Hydra configs);
``--variant test_tiny`` is the same code in a reduced configuration, for tests only. Plain module: no grpc,
no celery, nothing of the platform imported (it runs in the export venv).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from functools import partial
from pathlib import Path

import torch
import typer
from torch import nn

IMAGE_SIZE = 1024  # both families' input resolution
LOW_RES = 256  # the decoders' mask logits (IMAGE_SIZE / 4)
OPSET = 17
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "foundation" / "onnx_model.py"

SAM_VARIANTS = {  # segment_anything.build_sam's three, and a reduced one of the same code for tests
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
    "test_tiny": {"encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
                  "encoder_global_attn_indexes": [1]},
}
SAM2_VARIANTS = {  # the package's Hydra configs; test_tiny: hiera_t with 5 blocks instead of 12, 16 channels instead of 96
    **{f"sam2.1_hiera_{k}": (f"configs/sam2.1/sam2.1_hiera_{k}.yaml", []) for k in ("t", "s", "b+", "l")},
    **{f"sam2_hiera_{k}": (f"configs/sam2/sam2_hiera_{k}.yaml", []) for k in ("t", "s", "b+", "l")},
    "test_tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml",
                  ["++model.image_encoder.trunk.stages=[1,1,2,1]", "++model.image_encoder.trunk.global_att_blocks=[3]",
                   "++model.image_encoder.trunk.embed_dim=16",
                   "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
                   "++model.memory_attention.num_layers=1"]),
}


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the architecture: the message names the keys."""


# --- building and loading ------------------------------------------------------------------------
def build(family: str, variant: str) -> nn.Module:
    """The official architecture at random initialisation (eval mode, CPU)."""
    if family == "sam":
        from segment_anything.build_sam import _build_sam

        if variant not in SAM_VARIANTS:
            raise typer.BadParameter(f"SAM variants: {', '.join(SAM_VARIANTS)}", param_hint="--variant")
        return _build_sam(**SAM_VARIANTS[variant], checkpoint=None).eval()
    if family == "sam2":
        from hydra import initialize_config_module
        from hydra.core.global_hydra import GlobalHydra
        from sam2.build_sam import build_sam2

        if variant not in SAM2_VARIANTS:
            raise typer.BadParameter(f"SAM 2 variants: {', '.join(SAM2_VARIANTS)}", param_hint="--variant")
        config, overrides = SAM2_VARIANTS[variant]
        if not GlobalHydra.instance().is_initialized():  # sam2/__init__ does this on import
            initialize_config_module("sam2", version_base="1.2")
        return build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides),
                          apply_postprocessing=False).eval()
    raise typer.BadParameter("sam or sam2", param_hint="--family")


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Loads the checkpoint's weights (SAM: a state dict; SAM 2: ``{"model": state dict}``); refuses one
    whose keys or shapes do not match, naming the missing and unexpected keys."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatch(f"{path}: not a state dict of tensors (nor {{'model': state dict}})")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch: {_describe(wrong, 6)}")
    if problems:
        raise CheckpointMismatch(f"{path} does not fit this architecture (wrong --family or --variant?): "
                                 + "; ".join(problems))
    model.load_state_dict(state, strict=True)


# --- the two graphs --------------------------------------------------------------------------------
def _normalise(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (image.permute(0, 3, 1, 2).float() - mean) / std


class SamEncoder(nn.Module):
    """IMAGE (B, 1024, 1024, 3) uint8, the resized image top-left, SIZE (B, 2) int32 its (h, w) ->
    EMBEDDING (B, 256, 64, 64) float16. The padding is zero after normalisation, as in ``Sam.preprocess``."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.encoder = sam.image_encoder
        self.register_buffer("mean", sam.pixel_mean.view(1, 3, 1, 1).clone())
        self.register_buffer("std", sam.pixel_std.view(1, 3, 1, 1).clone())

    def forward(self, image, size):
        x = _normalise(image, self.mean, self.std)
        index = torch.arange(IMAGE_SIZE, device=x.device)
        rows = index.view(1, -1, 1) < size[:, 0].view(-1, 1, 1)
        cols = index.view(1, 1, -1) < size[:, 1].view(-1, 1, 1)
        x = x * (rows & cols).unsqueeze(1).to(x.dtype)
        return self.encoder(x).half()


class Sam2Encoder(nn.Module):
    """IMAGE (B, 1024, 1024, 3) uint8, the image stretched to the square (``SAM2Transforms``), SIZE
    unused -> EMBEDDING (B, 256, 64, 64), HIGH_RES_0 (B, 32, 256, 256), HIGH_RES_1 (B, 64, 128, 128)
    float16: ``SAM2ImagePredictor.set_image``'s features."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)
        self.sizes = [(IMAGE_SIZE // 4, IMAGE_SIZE // 4), (IMAGE_SIZE // 8, IMAGE_SIZE // 8),
                      (IMAGE_SIZE // 16, IMAGE_SIZE // 16)]

    def forward(self, image, size):
        x = _normalise(image, self.mean, self.std) + 0 * size.sum().float()  # SIZE stays an input of the graph
        backbone_out = self.model.forward_image(x)
        _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        batch = x.shape[0]
        feats = [feat.permute(1, 2, 0).reshape(batch, -1, *hw) for feat, hw in zip(vision_feats, self.sizes)]
        return feats[2].half(), feats[0].half(), feats[1].half()


def _select(masks: torch.Tensor, iou: torch.Tensor, labels: torch.Tensor):
    """One mask per request, as the official predictors would be used for clicking: with a single prompt
    point (no box) the best of the three multimask outputs by predicted IoU, else the single-mask output."""
    prompts = ((labels >= 0) & (labels <= 1)).sum(dim=1) + (labels == 2).sum(dim=1)
    best = torch.argmax(iou[:, 1:], dim=1) + 1
    index = torch.where(prompts == 1, best, torch.zeros_like(best))
    h, w = masks.shape[-2:]
    chosen = torch.gather(masks, 1, index.view(-1, 1, 1, 1).expand(-1, 1, h, w))
    return chosen, torch.gather(iou, 1, index.view(-1, 1))


def _dense(prompt_encoder, mask_input, has_mask_input):
    """The mask prompt: the previous low-resolution logits where given, else the learnt no-mask embedding
    (arithmetic instead of control flow, as ``segment_anything.utils.onnx.SamOnnxModel``)."""
    has = has_mask_input.view(-1, 1, 1, 1)
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    return has * prompt_encoder.mask_downscaling(mask_input) + (1 - has) * no_mask


class SamDecoder(nn.Module):
    """EMBEDDING (B, 256, 64, 64) float16, POINT_COORDS (B, N, 2) float32 in the 1024 frame, POINT_LABELS
    (B, N) float32 (1 positive, 0 negative, 2/3 box corners, -1 padding), MASK_INPUT (B, 1, 256, 256)
    float32 logits, HAS_MASK_INPUT (B, 1) -> LOW_RES_LOGITS (B, 1, 256, 256), IOU (B, 1).
    ``MaskDecoder.predict_masks`` without its per-prompt repeat of the image, so B sessions batch."""

    def __init__(self, sam) -> None:
        super().__init__()
        self.prompt_encoder, self.decoder = sam.prompt_encoder, sam.mask_decoder

    def _points(self, coords, labels):
        pe = self.prompt_encoder
        embedding = pe.pe_layer._pe_encoding((coords + 0.5) / IMAGE_SIZE)
        labels = labels.unsqueeze(-1)
        embedding = embedding * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(pe.num_point_embeddings):
            embedding = embedding + pe.point_embeddings[i].weight * (labels == i)
        return embedding

    def forward(self, embedding, point_coords, point_labels, mask_input, has_mask_input):
        d = self.decoder
        sparse = self._points(point_coords, point_labels)
        tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], dim=0)
        tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        src = embedding.float() + _dense(self.prompt_encoder, mask_input, has_mask_input)
        pos = self.prompt_encoder.get_dense_pe().expand(src.shape[0], -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = d.transformer(src, pos, tokens)
        upscaled = d.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([d.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in range(d.num_mask_tokens)], 1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return _select(masks, d.iou_prediction_head(hs[:, 0, :]), point_labels)


class Sam2Decoder(nn.Module):
    """As ``SamDecoder`` plus HIGH_RES_0/HIGH_RES_1 float16 inputs: ``SAM2ImagePredictor._predict`` with the
    package's prompt encoder and ``MaskDecoder.predict_masks(repeat_image=False)``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.prompt_encoder, self.decoder = model.sam_prompt_encoder, model.sam_mask_decoder

    def forward(self, embedding, high_res_0, high_res_1, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.prompt_encoder._embed_points(point_coords, point_labels, pad=False)
        dense = _dense(self.prompt_encoder, mask_input, has_mask_input)
        masks, iou, _, _ = self.decoder.predict_masks(
            image_embeddings=embedding.float(), image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=False,
            high_res_features=[high_res_0.float(), high_res_1.float()])
        return _select(masks, iou, point_labels)


# --- Triton folders ---------------------------------------------------------------------------------
def _io(name: str, dtype: str, dims: list[int], comment: str, optional: bool = False) -> str:
    extra = "\n    optional: true" if optional else ""
    return (f"  {{\n    # {comment}\n    name: \"{name}\"\n    data_type: {dtype}\n"
            f"    dims: [ {', '.join(str(d) for d in dims)} ]{extra}\n  }}")


def _config(name: str, header: str, inputs: list[str], outputs: list[str], batch: int, delay_us: int,
            params: dict[str, str], gpu: bool, count: int) -> str:
    backend = 'platform: "onnxruntime_onnx"' if gpu else 'backend: "python"'
    lines = [header.rstrip("\n"), f'name: "{name}"', backend, f"max_batch_size: {batch}",
             "input [\n" + ",\n".join(inputs) + "\n]", "output [\n" + ",\n".join(outputs) + "\n]",
             f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}",
             f"instance_group [\n  {{\n    count: {count}\n    kind: {'KIND_GPU' if gpu else 'KIND_CPU'}\n  }}\n]"]
    lines += [f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _write_folder(folder: Path, onnx_file: Path, card: dict, cpu: str, gpu: str) -> None:
    """The folder, written beside its final name and renamed into place. ``onnx_file``'s folder holds the
    graph and, past ONNX's 2 GB limit (ViT-H), its weights as external data files: all go into ``1/``."""
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.move(str(onnx_file.parent), staging / "1")
    (staging / "configs").mkdir()
    shutil.copy(TEMPLATE, staging / "1" / "model.py")
    (staging / "1" / "export.json").write_text(json.dumps(card, indent=2) + "\n")
    (staging / "config.pbtxt").write_text(cpu)
    (staging / "configs" / "gpu.pbtxt").write_text(gpu)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_name(family: str, variant: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"{family}_{variant}".lower())


def is_current(family: str, variant: str, checkpoint: Path, out: Path, name: str, instances: tuple[int, int]) -> bool:
    """True when ``out`` already holds this checkpoint's export (same digest, family, variant, instances)."""
    digest = _sha256(checkpoint)
    for part in ("encoder", "decoder"):
        card = out / f"{name}_{part}" / "1" / "export.json"
        if not card.exists() or not (card.parent / "model.onnx").exists():
            return False
        seen = json.loads(card.read_text())
        if (seen.get("checkpoint_sha256"), seen.get("family"), seen.get("variant"), seen.get("gpu_instances")) != \
                (digest, family, variant, list(instances)):
            return False
    return True


def export(family: str, variant: str, checkpoint: Path | None, out: Path, name: str = "",
           model: nn.Module | None = None, gpu_instances: tuple[int, int] = (1, 1)) -> tuple[Path, Path]:
    """Writes ``out/<name>_encoder`` and ``out/<name>_decoder``; returns both folders. ``model``: an
    already loaded model (tests); otherwise built and loaded from ``checkpoint``. ``gpu_instances``: the
    encoder's and the decoder's instance count per GPU in ``configs/gpu.pbtxt``."""
    name = name or default_name(family, variant)
    if model is None:
        if checkpoint is None:
            raise typer.BadParameter("required", param_hint="--checkpoint")
        model = build(family, variant)
        load_checkpoint(model, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    sam2 = family == "sam2"
    encoder = (Sam2Encoder(model) if sam2 else SamEncoder(model)).eval()
    decoder = (Sam2Decoder(model) if sam2 else SamDecoder(model)).eval()
    feature_shapes = {"EMBEDDING": [256, 64, 64]}
    if sam2:
        feature_shapes |= {"HIGH_RES_0": [32, 256, 256], "HIGH_RES_1": [64, 128, 128]}
    enc_name, dec_name = f"{name}_encoder", f"{name}_decoder"
    tmp = out / f".{name}.onnx.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with torch.no_grad():
        image = torch.zeros(1, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8)
        size = torch.tensor([[IMAGE_SIZE, 768]], dtype=torch.int32)
        enc_file = tmp / "encoder" / "model.onnx"
        enc_file.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(encoder, (image, size), str(enc_file), input_names=["IMAGE", "SIZE"],
                          output_names=list(feature_shapes), opset_version=OPSET, dynamo=False,
                          dynamic_axes={"IMAGE": {0: "batch"}, "SIZE": {0: "batch"},
                                        **{k: {0: "batch"} for k in feature_shapes}})
        features = [torch.zeros(1, *shape, dtype=torch.float16) for shape in feature_shapes.values()]
        coords = torch.tensor([[[500.0, 375.0], [0.0, 0.0]]])
        labels = torch.tensor([[1.0, -1.0]])
        mask_input, has_mask = torch.zeros(1, 1, LOW_RES, LOW_RES), torch.ones(1, 1)
        dec_file = tmp / "decoder" / "model.onnx"
        dec_file.parent.mkdir(parents=True, exist_ok=True)
        dec_inputs = [*feature_shapes, "POINT_COORDS", "POINT_LABELS", "MASK_INPUT", "HAS_MASK_INPUT"]
        torch.onnx.export(decoder, (*features, coords, labels, mask_input, has_mask), str(dec_file),
                          input_names=dec_inputs, output_names=["LOW_RES_LOGITS", "IOU"], opset_version=OPSET,
                          dynamo=False,
                          dynamic_axes={**{k: {0: "batch"} for k in dec_inputs},
                                        "POINT_COORDS": {0: "batch", 1: "points"},
                                        "POINT_LABELS": {0: "batch", 1: "points"},
                                        "LOW_RES_LOGITS": {0: "batch"}, "IOU": {0: "batch"}})
    import segment_anything

    versions = {"torch": torch.__version__}
    try:
        from importlib.metadata import version

        versions |= {"segment-anything": version("segment-anything"), "sam2": version("sam2")}
    except Exception:  # noqa: BLE001 - the card is informative only
        versions["segment-anything"] = getattr(segment_anything, "__version__", "")
    card = {"family": family, "variant": variant, "checkpoint": str(checkpoint or ""),
            "checkpoint_sha256": _sha256(checkpoint) if checkpoint else "", "packages": versions,
            "image_size": IMAGE_SIZE, "low_res": LOW_RES, "gpu_instances": list(gpu_instances)}
    geometry = {"family": family, "image_size": str(IMAGE_SIZE), "low_res": str(LOW_RES),
                "resize": "stretch" if sam2 else "longest_side"}
    header = (f"# {family.upper()} {variant} {{what}}, exported by services/segmentation/export_foundation.py from\n"
              f"# {Path(checkpoint).name if checkpoint else 'an in-memory model'}. {{backend}}\n")
    cpu_note = "CPU: the Python backend runs 1/model.onnx with onnxruntime (.venv-triton)."
    gpu_note = ("GPU (tritonserver --model-config-name=gpu): NVIDIA's native onnxruntime backend;\n"
                "# differs from ../config.pbtxt only in backend, instance kind and batching.")
    enc_in = [_io("IMAGE", "TYPE_UINT8", [IMAGE_SIZE, IMAGE_SIZE, 3], "RGB resized into the square, top-left"),
              _io("SIZE", "TYPE_INT32", [2], "(h, w) of the resized image inside IMAGE")]
    enc_out = [_io(k, "TYPE_FP16", v, "image features, kept by the session") for k, v in feature_shapes.items()]
    enc_params = {**geometry, "interface": "foundation_encoder", "decoder": dec_name, "onnx_threads": "2"}
    dec_in = [_io(k, "TYPE_FP16", v, "the encoder's output of the same name") for k, v in feature_shapes.items()]
    dec_in += [_io("POINT_COORDS", "TYPE_FP32", [-1, 2], "(x, y) in the 1024 frame; box corners last"),
               _io("POINT_LABELS", "TYPE_FP32", [-1], "1 positive, 0 negative, 2/3 box corners, -1 padding"),
               _io("MASK_INPUT", "TYPE_FP32", [1, LOW_RES, LOW_RES], "the previous step's LOW_RES_LOGITS"),
               _io("HAS_MASK_INPUT", "TYPE_FP32", [1], "1 when MASK_INPUT holds a previous mask, else 0")]
    dec_out = [_io("LOW_RES_LOGITS", "TYPE_FP32", [1, LOW_RES, LOW_RES], "mask logits in the 1024 frame / 4"),
               _io("IOU", "TYPE_FP32", [1], "the decoder's predicted IoU of that mask")]
    dec_params = {**geometry, "interface": "foundation_decoder", "encoder": enc_name, "onnx_threads": "1"}
    for folder_name, what, inputs, outputs, params, batches, onnx_file, gpu_count in (
            (enc_name, "image encoder (once per session)", enc_in, enc_out, enc_params, (2, 8, 5000), enc_file,
             gpu_instances[0]),
            (dec_name, "prompt decoder (per click)", dec_in, dec_out, dec_params, (32, 64, 2000), dec_file,
             gpu_instances[1])):
        cpu = _config(folder_name, header.format(what=what, backend=cpu_note), inputs, outputs, batches[0],
                      batches[2], params, gpu=False, count=1)
        gpu = _config(folder_name, header.format(what=what, backend=gpu_note), inputs, outputs, batches[1],
                      batches[2] // 4, params, gpu=True, count=gpu_count)
        _write_folder(out / folder_name, onnx_file, card | {"model": what}, cpu, gpu)
    shutil.rmtree(tmp, ignore_errors=True)
    return out / enc_name, out / dec_name


def verify(family: str, model: nn.Module, encoder: Path, decoder: Path, seed: int = 0) -> dict[str, float]:
    """Runs both exported graphs with onnxruntime and the official code path on the same inputs (the encoder
    on ``Sam.preprocess``'d / normalised pixels, the decoder through ``SamPredictor.predict_torch`` /
    ``SAM2ImagePredictor._predict`` with a previous mask); returns the largest absolute differences."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    height, width = (IMAGE_SIZE, 768) if family == "sam" else (IMAGE_SIZE, IMAGE_SIZE)
    image = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    image[0, :height, :width] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    size = np.array([[height, width]], np.int32)
    enc = ort.InferenceSession(str(encoder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in enc.get_outputs()]
    got = dict(zip(names, enc.run(None, {"IMAGE": image, "SIZE": size})))
    pixels = torch.from_numpy(image[:, :height, :width]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        if family == "sam":
            from segment_anything import SamPredictor

            official = {"EMBEDDING": model.image_encoder(model.preprocess(pixels[0]).unsqueeze(0))}
            predictor = SamPredictor(model)
            predictor.features, predictor.is_image_set = official["EMBEDDING"], True
            predictor.original_size = predictor.input_size = (height, width)
        else:
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            outs = Sam2Encoder(model)(torch.from_numpy(image), torch.from_numpy(size))  # shapes only
            backbone = model.forward_image((pixels / 255 - mean) / std)
            _, feats, _, _ = model._prepare_backbone_features(backbone)
            if model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + model.no_mem_embed
            official = {k: f.permute(1, 2, 0).reshape(o.shape) for k, f, o in
                        zip(("HIGH_RES_0", "HIGH_RES_1", "EMBEDDING"), feats, (outs[1], outs[2], outs[0]))}
            predictor = SAM2ImagePredictor(model)
            predictor._features = {"image_embed": official["EMBEDDING"],
                                   "high_res_feats": [official["HIGH_RES_0"], official["HIGH_RES_1"]]}
            predictor._is_image_set, predictor._orig_hw = True, [(height, width)]
        diffs = {k: float((torch.from_numpy(got[k]).float() - official[k]).abs().max()) for k in names}
        coords = np.array([[[300.0, 400.0], [100.0, 200.0], [0.0, 0.0]]], np.float32)
        labels = np.array([[1.0, 0.0, -1.0]], np.float32)
        prev = rng.normal(0, 4, (1, 1, LOW_RES, LOW_RES)).astype(np.float32)
        feed = {k: official[k].half().numpy() for k in names}
        low, iou = dec.run(None, {**feed, "POINT_COORDS": coords, "POINT_LABELS": labels, "MASK_INPUT": prev,
                                  "HAS_MASK_INPUT": np.ones((1, 1), np.float32)})
        # the official predictors pad a point themselves when there is no box: hand them the clicks only
        args = (torch.from_numpy(coords[:, :2]), torch.from_numpy(labels[:, :2]), None, torch.from_numpy(prev))
        if family == "sam":
            _, ref_iou, ref_low = predictor.predict_torch(*args, multimask_output=False, return_logits=True)
        else:
            _, ref_iou, ref_low = predictor._predict(*args, multimask_output=False, return_logits=True)
    diffs["LOW_RES_LOGITS"] = float(np.abs(low - ref_low.numpy()).max())
    diffs["IOU"] = float(np.abs(iou - ref_iou.numpy()).max())
    diffs["logit_scale"] = float(np.abs(ref_low.numpy()).max())
    return diffs


app = typer.Typer(add_completion=False)


@app.command()
def main(family: str = typer.Option(..., help="sam or sam2"),
         checkpoint: Path = typer.Option(..., exists=True, dir_okay=False, help="the .pth/.pt file you bring"),
         out: Path = typer.Option(..., help="a Triton model repository (the two folders go in it)"),
         variant: str = typer.Option("", help="SAM: vit_b|vit_l|vit_h; SAM 2: sam2.1_hiera_t|s|b+|l, sam2_hiera_*"),
         name: str = typer.Option("", help="model name prefix (default <family>_<variant>)"),
         check: bool = typer.Option(True, "--verify/--no-verify",
                                    help="compare the graphs with the package's own predictor"),
         encoder_instances: int = typer.Option(1, min=1, help="encoder instances per GPU (configs/gpu.pbtxt)"),
         decoder_instances: int = typer.Option(1, min=1, help="decoder instances per GPU (configs/gpu.pbtxt)"),
         skip_if_current: bool = typer.Option(False, help="do nothing when OUT already holds this export "
                                              "(a pod's init container on a kept volume)")) -> None:
    """Export a SAM / SAM 2 checkpoint into <out>/<name>_encoder and <out>/<name>_decoder."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    variant = variant or ("vit_b" if family == "sam" else "sam2.1_hiera_t")
    name = name or default_name(family, variant)
    instances = (encoder_instances, decoder_instances)
    if skip_if_current and is_current(family, variant, checkpoint, out, name, instances):
        typer.echo(f"{out}/{name}_encoder and _decoder are current for {checkpoint}")
        return
    try:
        model = build(family, variant)
        load_checkpoint(model, checkpoint)
    except CheckpointMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    encoder, decoder = export(family, variant, checkpoint, out, name, model=model, gpu_instances=instances)
    typer.echo(f"wrote {encoder} and {decoder}")
    if check:
        diffs = verify(family, model, encoder, decoder)
        typer.echo("largest |onnx - official|: " + json.dumps(diffs))
        # float16 features: relative error about 1e-3 of their scale
        if diffs["LOW_RES_LOGITS"] > 0.02 * max(1.0, diffs["logit_scale"]) or diffs["IOU"] > 0.02:
            typer.echo("error: the exported graphs disagree with the official predictor", err=True)
            raise typer.Exit(3)


if __name__ == "__main__":
    app()
