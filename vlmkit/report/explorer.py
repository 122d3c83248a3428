"""An ipywidgets explorer: pick a perturbation family, severity, band and image; see the perturbed
image, its spectrum and its similarity to the captions, live (for JupyterLab)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch

from vlmkit.registry import PERTURBATIONS
from vlmkit.report.figures import log_spectrum
from vlmkit.runtime import make_generator


def render_view(vlm: Any, image: torch.Tensor, captions: Sequence[str], name: str, severity: int | float,
                seed: int = 0, **params: Any) -> plt.Figure:
    """One explorer view: clean vs perturbed image, the perturbed spectrum, and caption similarities."""
    x = image[None].float() / 255 if image.dtype == torch.uint8 else image[None]
    sev = severity if PERTURBATIONS.meta(name).get("severities") else 1
    y = PERTURBATIONS.get(name)(x, sev, generator=make_generator(seed), **params)
    with torch.inference_mode():
        txt = vlm.encode_text(list(captions))
        sims = torch.stack([vlm.encode_image(x)[0] @ txt.T, vlm.encode_image(y)[0] @ txt.T])  # (2, T)
    fig, ax = plt.subplots(1, 4, figsize=(12, 3), gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    ax[0].imshow(x[0].permute(1, 2, 0).clamp(0, 1))
    ax[0].set_title("clean", fontsize=8)
    ax[1].imshow(y[0].permute(1, 2, 0).clamp(0, 1))
    ax[1].set_title(f"{name} @ {severity}", fontsize=8)
    ax[2].imshow(log_spectrum(y - x)[0], cmap="magma")
    ax[2].set_title("spectrum of the perturbation", fontsize=8)
    for a in ax[:3]:
        a.axis("off")
    pos = range(len(captions))
    ax[3].barh([p + 0.2 for p in pos], sims[0].tolist(), height=0.4, label="clean")
    ax[3].barh([p - 0.2 for p in pos], sims[1].tolist(), height=0.4, label="perturbed")
    ax[3].set_yticks(list(pos), labels=[c[:40] for c in captions], fontsize=7)
    ax[3].set_xlabel("cosine similarity")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def perturbation_explorer(vlm: Any, images: torch.Tensor, captions: Sequence[str],
                          names: Sequence[str] | None = None) -> Any:
    """Interactive widget over registered perturbations (severity slider; ``band`` for band filters)."""
    import ipywidgets as W

    names = list(names or [n for n in PERTURBATIONS.list() if not PERTURBATIONS.meta(n).get("needs")])
    name = W.Dropdown(options=names, value=names[0], description="perturbation")
    severity = W.IntSlider(value=3, min=1, max=5, description="severity")
    index = W.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
    band = W.FloatRangeSlider(value=(0.0, 0.2), min=0.0, max=0.71, step=0.01, description="band (cyc/px)")

    def show(name: str, severity: int, index: int, band: tuple[float, float]) -> None:
        fn = getattr(PERTURBATIONS.get(name), "raw", PERTURBATIONS.get(name))
        params = {"band": tuple(band)} if "band" in inspect.signature(fn).parameters else {}
        render_view(vlm, images[index], captions, name, severity, **params)
        plt.show()

    return W.interactive(show, name=name, severity=severity, index=index, band=band)
