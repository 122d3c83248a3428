"""Check a model spec before anything loads it: the spec parses, and its weights are on disk or reachable.

:func:`check_model_spec` is what a grid calls for every model of its runs before the first notebook
starts, so a typo or unreachable weights fail in seconds instead of an hour into a run. It loads no
model: a spec's family, architecture and tag are checked against the registries, local paths must
exist, and weights that come from the hub must be in the local cache or the hub must answer one
request (:func:`vlmkit.models.hub.reachable`, a few seconds at most, once per process).
"""

from __future__ import annotations

import os

from vlmkit.errors import ModelSpecError, WeightsNotFoundError, did_you_mean
from vlmkit.models import hub, parse_spec

_OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def open_clip_url_cached(url: str) -> bool:
    """The file open_clip downloads from ``url`` is in open_clip's own cache (``~/.cache/clip``)."""
    return bool(url) and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))


def _unreachable(spec: str, what: str, local_hint: str) -> WeightsNotFoundError:
    why = ("downloads are disabled (VLMKIT_OFFLINE/HF_HUB_OFFLINE is set)" if hub.offline()
           else f"the hub {hub.hub_endpoint()} cannot be reached")
    return WeightsNotFoundError(
        f"model {spec!r}: {what} are not in the local cache ({hub.hf_cache_dir()}) and {why}. Download them into the "
        f"cache on a machine with network, or pass a local path instead ({local_hint}), or drop this model; "
        "set VLMKIT_OFFLINE=1 to never try the network")


def _need_hub(spec: str, cached: bool, what: str, local_hint: str) -> None:
    if not cached and not hub.reachable():
        raise _unreachable(spec, what, local_hint)


def _check_open_clip(spec: str, rest: str, weights: bool) -> None:
    if not rest:
        raise ModelSpecError(f"model spec {spec!r} names no architecture; e.g. 'open_clip:ViT-B-32/laion2b_s34b_b79k'")
    if rest.startswith("hf-hub:"):
        repo = rest[len("hf-hub:"):]
        if not repo:
            raise ModelSpecError(f"model spec {spec!r} names no hub repository; e.g. 'open_clip:hf-hub:chs20/fare2-clip'")
        if weights:
            _need_hub(spec, hub.cached_hub_file(repo, "open_clip_config.json") is not None,
                      f"the open_clip hub model {repo!r}", "'open_clip:local-dir:/path/to/folder'")
        return
    from vlmkit.models.openclip import local_export_dir

    if local_export_dir(rest, spec) is not None:  # the loader's own resolution of export folders
        return
    import open_clip

    arch, _, tail = rest.partition("/")
    archs = list(open_clip.list_models())
    if arch not in archs:
        raise ModelSpecError(f"unknown open_clip architecture {arch!r} in spec {spec!r}.{did_you_mean(arch, archs)} "
                             "See open_clip.list_models() for all names.")
    if not tail:  # random initialisation: nothing to download
        return
    if hub.looks_like_path(tail):
        hub.require_path(tail, f"open_clip {arch} weights for {spec!r}",
                         "Pass an existing .pt/.bin/.pth/.safetensors checkpoint of that architecture.")
        return
    tags = list(open_clip.list_pretrained_tags_by_model(arch))
    if tail not in tags:
        raise ModelSpecError(f"unknown pretrained tag {tail!r} for open_clip {arch}.{did_you_mean(tail, tags)} "
                             f"Known tags for {arch}: {', '.join(tags) or '(none)'}; or give a local weights path.")
    if not weights:
        return
    cfg = open_clip.get_pretrained_cfg(arch, tail)
    hub_id = (cfg.get("hf_hub") or "").rstrip("/")
    cached = open_clip_url_cached(cfg.get("url") or "")
    if hub_id and not cached:
        parts = hub_id.split("/")
        repo, fname = "/".join(parts[:2]), "/".join(parts[2:]) or "open_clip_pytorch_model.bin"
        cached = any(hub.cached_hub_file(repo, f) for f in (fname, *_OPEN_CLIP_WEIGHTS))
    _need_hub(spec, cached, f"the open_clip {arch} weights {tail!r}" + (f" (hub {hub_id})" if hub_id else ""),
              f"'open_clip:{arch}/path/to/weights.safetensors'")


def _check_hf(spec: str, rest: str, weights: bool) -> None:
    if not rest:
        raise ModelSpecError(f"model spec {spec!r} names no model; e.g. 'hf:openai/clip-vit-base-patch32' or 'hf:/path'")
    if hub.looks_like_path(rest):
        src = hub.require_path(rest, f"transformers model folder for {spec!r}",
                               "Expected a folder written by model.save_pretrained(...) with config.json.")
        if not (src / "config.json").is_file():
            raise ModelSpecError(f"{str(src)!r} has no config.json: expected a folder written by save_pretrained()")
        return
    if weights:
        _need_hub(spec, hub.cached_hub_file(rest, "config.json") is not None, f"the transformers model {rest!r}",
                  "'hf:/path/to/folder' saved with save_pretrained")


def _check_toy(spec: str, rest: str, weights: bool) -> None:
    from vlmkit import toyworld

    names = toyworld.list_checkpoints()
    if rest not in names:
        raise ModelSpecError(f"unknown toy model {rest!r} in {spec!r}.{did_you_mean(rest, names)} "
                             f"Shipped toy models: {', '.join(names) or '(none)'}")


def _check_conse(spec: str, rest: str, weights: bool) -> None:
    from vlmkit.models.conse.spec import parse_conse_spec

    parse_conse_spec(rest)  # a ModelSpecError names what is wrong; the packaged parts need no network


_CHECKS = {"open_clip": _check_open_clip, "hf": _check_hf, "toy": _check_toy, "conse": _check_conse}


def check_model_spec(spec: str, *, weights: bool = True) -> None:
    """Check that ``spec`` names a loadable model, without loading it (seconds at most, no download).

    The spec must parse (family, architecture, pretrained tag, toy name, local path). With ``weights``,
    weights that come from a hub (open_clip pretrained tags and ``hf-hub:`` ids, transformers hub ids)
    must be in the local cache, or the hub must answer (:func:`vlmkit.models.hub.reachable`). Toy,
    ConSE and local-path specs never touch the network; families vlmkit does not know how to check
    are only parsed.

    Raises:
        ModelSpecError: Malformed spec, unknown family/architecture/tag/toy model (with near matches).
        WeightsNotFoundError: A local path that does not exist, or hub weights that are neither cached nor
            reachable; the message names the spec and how to provide the weights.
    """
    if isinstance(spec, str) and spec.strip().startswith("toycap:"):  # the toy world's captioners (task models)
        from vlmkit.toyworld.captioning import check_captioner

        check_captioner(spec)
        return
    family, rest = parse_spec(spec)
    check = _CHECKS.get(family)
    if check is not None:
        check(spec.strip(), rest.strip(), weights)


__all__ = ["check_model_spec", "open_clip_url_cached"]
