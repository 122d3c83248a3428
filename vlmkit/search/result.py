"""What the language-induced adversarial search returns, and the adversarial image set it writes.

:class:`LanguageSearchResult` holds every scored prompt, the tidy ASR/SEM curves and the pruned word
space of a search (Zhu et al., ACM MM 2024); :meth:`LanguageSearchResult.write_images` writes the
adversarial images in the labelled-images layout (``images/``, ``labels.csv``, ``classes.txt``) that
:func:`vlmkit.data.load_labelled_csv` reads back, so every other metric of the kit runs on them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.search.config import SearchConfig, image_seed


def classify(target: Any, classifier: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Zero-shot predictions ``(n,)`` of ``target`` (a VLM) for images ``x`` ``(n, 3, H, W)`` with the class
    embeddings ``classifier`` ``(C, D)``."""
    with torch.inference_mode():
        emb = target.encode_image(x.to(target.device))  # (n, D)
        return target.similarity(emb, classifier.to(emb.device)).argmax(1).cpu()  # (n,)


@dataclass
class LanguageSearchResult:
    """What :func:`language_search` returns.

    Attributes:
        history: One row per scored prompt per generation: ``class``, ``generation``, ``rank``,
            ``prompt``, ``words`` (JSON), ``asr``, ``sem``, ``depicts`` (the generator's ground-truth
            check, True when it has none), ``fitness``, ``feasible`` (SEM ≥ τ and depicts).
        curves: Tidy rows (:func:`vlmkit.results.make_row`) per class and generation: ``asr_best``,
            ``asr_best_feasible``, ``asr_mean``, ``asr_plain`` (ASR of the plain class prompt, the
            baseline the search must beat), ``sem_best`` (SEM of the best prompt), ``sem_mean``,
            ``fitness_best``, ``feasible_share``; ``severity`` and ``generation`` hold the generation.
        word_space: Per class and word: one-word ``sem``, ``asr`` (when scored) and ``kept``.
        config: The search configuration.
        classnames: The target classifier's classes.
        generator: ``G`` (used again by :meth:`write_images`).
        target: The target classifier (for :meth:`write_images`).
    """

    history: pd.DataFrame
    curves: pd.DataFrame
    word_space: pd.DataFrame
    config: SearchConfig
    classnames: list[str]
    generator: Any = field(repr=False, default=None)
    target: Any = field(repr=False, default=None)
    classifier: torch.Tensor | None = field(repr=False, default=None)

    def best(self, k: int = 5, feasible_only: bool = True, min_asr: float = 0.0) -> pd.DataFrame:
        """The ``k`` best distinct prompts per class over all generations (by fitness, then SEM)."""
        h = self.history
        if feasible_only:
            h = h[h["feasible"]]
        h = h[h["asr"] > min_asr] if min_asr > 0 else h
        h = h.sort_values(["class", "fitness", "sem"], ascending=[True, False, False], kind="stable")
        return h.drop_duplicates(["class", "prompt"]).groupby("class", sort=False).head(k).reset_index(drop=True)

    def write_images(self, root: str | os.PathLike, k: int = 5, n: int | None = None, only_successful: bool = True,
                     seed: int | None = None) -> Path:
        """Write the adversarial image set in the labelled-images layout.

        ``root/images/<class>-<prompt k>-<image i>.png``, ``root/labels.csv`` (``file,label`` with the
        *true* class, plus ``prompt, predicted, asr, sem``), ``root/classes.txt`` and
        ``root/prompts.json``. Read it back with ``vlmkit.data.load_labelled_csv(root/"labels.csv",
        root/"images", root/"classes.txt")``.

        Args:
            root: Output folder (created).
            k: Best feasible prompts per class (with ASR > 0).
            n: Images per prompt (default: the search's ``images_per_prompt``).
            only_successful: Keep only images the target misclassifies.
            seed: Generator seed of the images (default: the search's, i.e. the images it scored).

        Raises:
            InputError: No feasible prompt with ASR > 0 was found (nothing to write).
        """
        from PIL import Image

        best = self.best(k, feasible_only=True, min_asr=1e-9)
        if best.empty:
            raise InputError(f"no feasible prompt (SEM >= {self.config.sem_threshold}) fooled the target; "
                             "nothing to write — lower sem_threshold or search longer")
        root = Path(root)
        (root / "images").mkdir(parents=True, exist_ok=True)
        n = n or self.config.images_per_prompt
        seed = image_seed(self.config) if seed is None else int(seed)
        rows, prompts = [], []
        for j, r in enumerate(best.to_dict("records")):
            cls, prompt = r["class"], r["prompt"]
            x = self.generator(prompt, n, seed)
            pred = classify(self.target, self.classifier, x)
            y = self.classnames.index(cls)
            for i in range(n):
                if only_successful and int(pred[i]) == y:
                    continue
                name = f"{_slug(cls)}-{j:03d}-{i:02d}.png"
                img = (x[i].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                Image.fromarray(img).save(root / "images" / name)
                rows.append((name, cls, prompt, self.classnames[int(pred[i])], round(float(r["asr"]), 4),
                             round(float(r["sem"]), 4)))
            prompts.append({"class": cls, "prompt": prompt, "asr": float(r["asr"]), "sem": float(r["sem"])})
        with open(root / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", "prompt", "predicted", "asr", "sem"])
            w.writerows(rows)
        (root / "classes.txt").write_text("\n".join(self.classnames) + "\n")
        (root / "prompts.json").write_text(json.dumps({"config": asdict(self.config), "prompts": prompts}, indent=2))
        return root


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)[:40]


__all__ = ["LanguageSearchResult", "classify"]
