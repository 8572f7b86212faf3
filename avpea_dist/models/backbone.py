"""The frozen timm ViT shared by both streams, its weights, and how each stream is turned into tokens."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..compat.timm import vit_pos_embed
from .adapter import AVPEAAdapter
from .block import AdapterSpec, AVPEABlock

log = logging.getLogger(__name__)

RANDOM_INIT_WARNING = ("model.pretrained='none': the frozen backbone is RANDOMLY INITIALISED. Results will be "
                       "far below the paper's; use model.pretrained=timm or a local weight file for real runs.")


def create_vit(name: str, img_size: int, adapter: AdapterSpec | None) -> VisionTransformer:
    """A timm ViT whose blocks are ``AVPEABlock``s; no classifier head, no dropout, no drop-path."""
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, drop_rate=0.0,
                                pos_drop_rate=0.0, proj_drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                                block_fn=functools.partial(AVPEABlock, adapter=adapter))
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"model.backbone='{name}' is not a timm model; list them with "
                             f"`python -c \"import timm; print(timm.list_models('vit_*'))\"`") from None
        raise
    if not isinstance(vit, VisionTransformer) or vit.cls_token is None:
        raise ValueError(f"model.backbone='{name}' must be a timm VisionTransformer with a CLS token")
    for module in vit.modules():
        if isinstance(module, AVPEAAdapter):
            module.reset_parameters()
    return vit


def is_adapter_key(key: str) -> bool:
    return ".adapters." in key


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file read with ``weights_only=True`` (no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file '{path}' does not exist; set model.pretrained to an existing "
                                f".safetensors/.pt/.pth file, 'timm' or 'none'")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise ValueError(f"weight file '{path}' is not a readable safetensors file: {e}") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"weight file '{path}' could not be read as a plain tensor file "
                             f"(weights_only=True refuses pickled code): {e}") from None
        for wrapper in ("state_dict", "model", "module"):  # common checkpoint wrappers
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"weight file '{path}' does not hold a flat mapping of names to tensors")
        return obj
    raise ValueError(f"weight file '{path}': unsupported extension '{path.suffix}'; use .safetensors, .pt or .pth")


def load_backbone_weights(vit: VisionTransformer, source: str, name: str) -> dict[str, Any]:
    """Load frozen weights non-strictly; only adapter keys may be missing, only head keys are dropped."""
    if source == "none":
        log.warning(RANDOM_INIT_WARNING)
        return {"source": "none", "warning": RANDOM_INIT_WARNING}
    if source == "timm":
        try:
            state = timm.create_model(name, pretrained=True, num_classes=0).state_dict()
        except Exception as e:
            raise RuntimeError(f"could not fetch '{name}' weights from the hub ({type(e).__name__}: {e}); "
                               f"without network, set model.pretrained to a local .safetensors file") from None
    else:
        state = read_state_file(source)
    state = {k.removeprefix("module.").removeprefix("vit."): v for k, v in state.items()}
    dropped = sorted(k for k in state if k.startswith(("head.", "fc_norm.")) and k not in vit.state_dict())
    for k in dropped:
        del state[k]
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=vit.patch_embed.grid_size,
                                                    num_prefix_tokens=prefix)
    try:
        missing, unexpected = vit.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"weights from '{source}' do not fit backbone '{name}' (shape mismatch): {e}") from None
    if unexpected:
        raise ValueError(f"weights from '{source}' hold {len(unexpected)} keys backbone '{name}' does not have "
                         f"(e.g. {unexpected[:5]}); is it a checkpoint of another model?")
    not_adapter = [k for k in missing if not is_adapter_key(k)]
    if not_adapter:
        raise ValueError(f"weights from '{source}' lack {len(not_adapter)} backbone keys of '{name}' "
                         f"(e.g. {not_adapter[:5]}); only adapter keys may be missing")
    loaded = sum(state[k].numel() for k in state)
    report = {"source": str(source), "tensors": len(state), "params": loaded, "missing_adapter_keys": len(missing),
              "dropped_head_keys": dropped}
    log.info("loaded %d backbone tensors (%d params) from %s; %d adapter keys left at init; dropped %s",
             len(state), loaded, source, len(missing), dropped or "nothing")
    return report


class StreamTokenizer(nn.Module):
    """Frames and log-mel spectrograms -> token sequences (CLS first), through the frozen patch embedding."""

    def __init__(self, vit: VisionTransformer, mel_bins: int, audio_frames: int) -> None:
        super().__init__()
        self.vit = [vit]  # a list: borrow the backbone without registering it twice
        p = vit.patch_embed.patch_size
        self.audio_grid = (mel_bins // p[0], audio_frames // p[1])
        if min(self.audio_grid) < 1:
            raise ValueError(f"audio of {mel_bins}x{audio_frames} is smaller than one {p} patch")
        mean = torch.tensor(vit.pretrained_cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32)
        std = torch.tensor(vit.pretrained_cfg.get("std", (0.5, 0.5, 0.5)), dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1) * 255, persistent=False)

    def visual(self, frames: torch.Tensor) -> torch.Tensor:
        """(S, 3, H, W) uint8 or float in [0, 255] -> (S, 1 + h*w, D)."""
        vit = self.vit[0]
        dtype = vit.patch_embed.proj.weight.dtype
        x = ((frames.float() - self.mean) / self.std).to(dtype)
        return vit.norm_pre(vit_pos_embed(vit, vit.patch_embed(x)))

    def audio(self, spec: torch.Tensor) -> torch.Tensor:
        """(S, mel, frames) normalised log-mel -> (S, 1 + h*w, D), the spectrogram read as a 3-channel image."""
        vit = self.vit[0]
        proj = vit.patch_embed.proj
        # Three identical channels through a conv equal one channel through the channel-summed kernel.
        weight = proj.weight.sum(dim=1, keepdim=True)
        x = F.conv2d(spec.unsqueeze(1).to(weight.dtype), weight, proj.bias, stride=proj.stride)
        x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))
        pos = resample_abs_pos_embed(vit.pos_embed, new_size=self.audio_grid, old_size=vit.patch_embed.grid_size,
                                     num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens)
        if vit.no_embed_class:
            x = x + pos
            cls = vit.cls_token.expand(x.shape[0], -1, -1)
        else:
            x = x + pos[:, 1:]
            cls = (vit.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return vit.norm_pre(torch.cat([cls, x], dim=1))
