"""ConSE spec strings: the packaged defaults, the prompt-template sets and the ``conse:`` spec parser.

ConSE (Norouzi et al. 2014, "Zero-Shot Learning by Convex Combination of Semantic Embeddings", ICLR 2014)
needs a classifier, a text encoder, ``T`` (the number of classes combined) and the prompt ensemble of the
class-name embeddings; a spec names all four (see :mod:`vlmkit.models.conse`)::

    conse:<classifier>+<text encoder>[?top=T&templates=<set>&scale=<logit scale>]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlmkit.data import openai_templates
from vlmkit.errors import ModelSpecError, did_you_mean

#: ``conse:default`` expands to this.
DEFAULT_SPEC = "conse:tf_efficientnet_lite0+all-MiniLM-L6-v2?top=10"
#: Canonical names of the packaged (offline) parts and their accepted aliases.
PACKAGED_CLASSIFIER = "tf_efficientnet_lite0"
PACKAGED_TEXT_ENCODER = "all-MiniLM-L6-v2"
CLASSIFIER_ALIASES = {"tf_efficientnet_lite0", "lite0", "efficientnet-lite0"}
TEXT_ALIASES = {"all-minilm-l6-v2", "minilm"}  # compared lower-case
DEFAULT_TOP = 10
DEFAULT_SCALE = 100.0
#: OpenAI's 7 ImageNet templates selected in CLIP's "Prompt_Engineering_for_ImageNet" notebook (all are in
#: the 80 of :func:`vlmkit.data.openai_templates`).
OPENAI7_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                     "a {} in a video game.", "art of the {}.", "a photo of the small {}.")
TEMPLATE_SETS = ("openai7", "photo", "openai")
DEFAULT_TEMPLATES = "openai7"
EXTRA_HINT = "install the optional extra: pip install 'vlmkit[offline]'"


def missing_extra(package: str, what: str, err: Exception) -> ImportError:
    """The ``ImportError`` for a missing optional package of the ``offline`` extra, naming the install command."""
    return ImportError(f"{what} needs the package {package!r}, which is not installed ({err}); {EXTRA_HINT} "
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


__all__ = ["CLASSIFIER_ALIASES", "ConSESpec", "DEFAULT_SCALE", "DEFAULT_SPEC", "DEFAULT_TEMPLATES", "DEFAULT_TOP",
           "EXTRA_HINT", "OPENAI7_TEMPLATES", "PACKAGED_CLASSIFIER", "PACKAGED_TEXT_ENCODER", "TEMPLATE_SETS",
           "TEXT_ALIASES", "missing_extra", "parse_conse_spec", "template_set"]
