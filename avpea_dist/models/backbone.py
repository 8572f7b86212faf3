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


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def check_weight_file(path: str | Path) -> Path:
    """A local backbone weight file named by model.pretrained, before timm reads it: it exists and has a
    suffix timm reads (safetensors, or a torch file that timm loads with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file '{path}' does not exist; set model.pretrained to an existing "
                                f".safetensors/.pt/.pth file, 'timm' or 'none'")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"weight file '{path}': unsupported extension '{path.suffix}'; use .safetensors, .pt "
                         f"or .pth")
    return path


def load_backbone_weights(vit: VisionTransformer, source: str, name: str) -> dict[str, Any]:
    """Frozen weights into ``vit`` through timm's own loader (``timm.models.load_pretrained``: the hub weights
    of ``name`` for 'timm', a local file through the ``file`` entry of its pretrained config otherwise), so no
    second ViT is built to copy from. timm's checkpoint filter resamples the position embedding; the key
    checks are ours and strict: only adapter keys may be missing, only classifier keys are dropped."""
    from timm.models import load_pretrained
    from timm.models.vision_transformer import checkpoint_filter_fn

    if source == "none":
        log.warning(RANDOM_INIT_WARNING)
        return {"source": "none", "warning": RANDOM_INIT_WARNING}
    pretrained_cfg = dict(vit.pretrained_cfg)
    if source != "timm":
        pretrained_cfg = {**pretrained_cfg, "file": str(check_weight_file(source)), "source": "",
                          "custom_load": False}  # a plain state dict, not the original .npz
    seen: dict[str, Any] = {}

    def keep_own_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        state = {k.removeprefix("module.").removeprefix("vit."): v for k, v in state.items()}
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"weight file '{source}' does not hold a flat mapping of names to tensors")
        own = model.state_dict()
        seen["dropped"] = sorted(k for k in state if k.startswith(("head.", "fc_norm.")) and k not in own)
        return checkpoint_filter_fn({k: v for k, v in state.items() if k not in seen["dropped"]}, model)

    def checked_load(state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:
        # timm calls the model's load_state_dict; ours loads non-strictly and keeps the result to check it.
        try:
            seen["result"] = nn.Module.load_state_dict(vit, state, strict=False, assign=assign)
        except RuntimeError as e:
            raise ValueError(f"weights from '{source}' do not fit backbone '{name}' (shape mismatch): {e}") from None
        seen["state"] = state
        return seen["result"]

    vit.load_state_dict = checked_load  # an instance attribute: only this load goes through it
    try:
        load_pretrained(vit, pretrained_cfg=pretrained_cfg, num_classes=0, filter_fn=keep_own_keys, strict=False)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as e:  # noqa: BLE001  (the hub, torch.load and safetensors raise their own types)
        if source == "timm":
            raise RuntimeError(f"could not fetch '{name}' weights from the hub ({type(e).__name__}: {e}); "
                               f"without network, set model.pretrained to a local .safetensors file") from None
        raise ValueError(f"weight file '{source}' could not be read as a plain tensor file (weights_only=True "
                         f"refuses pickled code; safetensors needs a valid header): {type(e).__name__}: {e}") from None
    finally:
        del vit.__dict__["load_state_dict"]
    if "result" not in seen:  # timm's own loader of an original .npz release bypasses load_state_dict
        raise ValueError(f"timm loaded '{name}' from '{source}' with a custom loader whose keys cannot be checked; "
                         f"save the weights as .safetensors and set model.pretrained to that file")
    missing, unexpected = seen["result"]
    if unexpected:
        raise ValueError(f"weights from '{source}' hold {len(unexpected)} keys backbone '{name}' does not have "
                         f"(e.g. {unexpected[:5]}); is it a checkpoint of another model?")
    not_adapter = [k for k in missing if not is_adapter_key(k)]
    if not_adapter:
        raise ValueError(f"weights from '{source}' lack {len(not_adapter)} backbone keys of '{name}' "
                         f"(e.g. {not_adapter[:5]}); only adapter keys may be missing")
    state, dropped = seen["state"], seen.get("dropped", [])
    loaded = sum(v.numel() for v in state.values())
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
