"""The text side of the VALOR tasks: a Hugging Face tokenizer and text model, found without the network.

One spec names the text model (``retrieval.text_model``, ``captioning.text_model``):
- ``'shards'``: the folder the shard build saved beside the shards (the manifest's ``text.folder``: a
  WordPiece tokenizer trained on the train captions and a small BERT config, random-init);
- a local folder holding a model saved with ``save_pretrained`` (config.json, weights, tokenizer files);
- a hub name such as ``bert-base-uncased``, read from the local Hugging Face cache only.

Every load goes through ``from_pretrained(..., local_files_only=True)``: the same path a real checkpoint
takes, and never a download at run time. A name missing from the cache is one error line with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import storage
from ...errors import ConfigError
from ...extras import require

if TYPE_CHECKING:
    import torch
    from torch import nn

SHARDS = "shards"


def shards_text_folder(shards_dir: str | Path, manifest: dict[str, Any] | None) -> Path | None:
    """The local path of the shards' text folder (``manifest['text']['folder']``); None when the manifest
    names none. Under an ``s3://`` / ``http(s)://`` shards root the folder is fetched once per process into
    the node cache (``data.folder_cache``), checked against the manifest's ``text.files`` hashes when it
    records them; tokenizers and ``from_pretrained`` then read that local copy."""
    text = (manifest or {}).get("text") or {}
    folder = text.get("folder")
    if not folder:
        return None
    if storage.is_url(shards_dir) and not Path(str(folder)).is_absolute():
        from ...data.folder_cache import local_folder

        return local_folder(storage.join(shards_dir, str(folder)), text.get("files"))
    return Path(shards_dir) / str(folder)  # an absolute folder (a run folder's copy) stays itself


def resolve_text_model(spec: str, shards_dir: str | Path | None, manifest: dict[str, Any] | None = None,
                       key: str = "retrieval.text_model") -> str:
    """``spec`` -> a local folder path, or a hub name to read from the local cache.

    'shards' needs a manifest with ``text: {"folder": ...}`` (the embedded set's build writes one); a path
    that exists is used as a folder; anything else is taken as a hub name (checked when loaded)."""
    if spec == SHARDS:
        if shards_dir is None:
            raise ConfigError(f"{key}='shards' needs the shards folder (data.shards); give a model folder instead")
        if manifest is None:
            path = storage.join(shards_dir, "manifest.json")
            try:
                manifest = json.loads(storage.read_bytes(path))
            except FileNotFoundError:
                raise FileNotFoundError(f"{key}='shards' but {storage.redact(path)} does not exist; build the shards "
                                        f"(`avpea shards build valor`) or set {key} to a model folder") from None
        if not (manifest.get("text") or {}).get("folder"):
            raise ConfigError(f"{key}='shards' but {storage.redact(storage.join(shards_dir, 'manifest.json'))} "
                              f"names no text model folder (no 'text.folder': these shards were built without "
                              f"one); set {key} to a local model folder or a cached hub name such as "
                              f"bert-base-uncased")
        path = shards_text_folder(shards_dir, manifest)
        if path is None or not path.is_dir():
            raise FileNotFoundError(f"{key}='shards': the text model folder {path} named by the manifest is "
                                    f"missing; copy the whole shards folder again or rebuild it")
        return str(path)
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(path)
    if path.suffix or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise FileNotFoundError(f"{key}={spec!r}: no such model folder; give a folder saved with "
                                f"save_pretrained, 'shards', or a hub name in the local Hugging Face cache")
    return spec


def is_available_offline(spec: str) -> bool:
    """True when ``spec`` is a folder, or a hub name whose config is in the local Hugging Face cache."""
    if spec == SHARDS or Path(spec).expanduser().is_dir():
        return True
    require("text", f"text model {spec!r}")
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _offline(load: Any, source: str, what: str, **kwargs: Any) -> Any:
    """``load(source, local_files_only=True, **kwargs)`` with one clear error when the files are absent."""
    try:
        return load(source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        if Path(source).is_dir():
            raise ValueError(f"text model folder {source}: cannot load its {what} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0]}); save it with save_pretrained") from None
        raise FileNotFoundError(f"text model {source!r}: its {what} is not in the local Hugging Face cache and "
                                f"runs never download; fetch it once where there is network "
                                f"(`hf download {source}`) or give a local folder") from None


def load_tokenizer(source: str) -> Any:
    """The fast tokenizer saved in ``source`` (a folder or a cached hub name)."""
    require("text", f"text model {source!r}")
    from transformers import AutoTokenizer

    tok = _offline(AutoTokenizer.from_pretrained, source, "tokenizer")
    if tok.pad_token_id is None:
        raise ValueError(f"text model {source!r}: its tokenizer has no padding token; set pad_token and save it again")
    return tok


def load_text_model(source: str, model_class: Any = None, **config_overrides: Any) -> "nn.Module":
    """The text model saved in ``source`` (weights included): ``model_class`` defaults to ``AutoModel``
    (an encoder); captioning passes e.g. ``AutoModelForCausalLM`` with ``is_decoder=True,
    add_cross_attention=True`` (new cross-attention weights start random, as transformers warns)."""
    require("text", f"text model {source!r}")
    from transformers import AutoModel

    return _offline((model_class or AutoModel).from_pretrained, source, "model", **config_overrides)


def tokenize(tokenizer: Any, texts: list[str], max_len: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """Captions -> (ids, attention mask), int64 (C, L), padded to the batch's longest, cut at ``max_len``
    tokens (special tokens included). No text gives (0, 1) tensors, so collation never special-cases it."""
    import torch

    if not texts:
        return torch.zeros(0, 1, dtype=torch.int64), torch.zeros(0, 1, dtype=torch.int64)
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"].long(), enc["attention_mask"].long()


def freeze(module: "nn.Module", trainable: bool) -> "nn.Module":
    """Set every parameter's ``requires_grad``; a frozen module is put in eval mode (no dropout: its
    embeddings stay a fixed function of the text). A head holding one keeps it there in its own ``train()``."""
    for p in module.parameters():
        p.requires_grad_(trainable)
    if not trainable:
        module.eval()
    return module
