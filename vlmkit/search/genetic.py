"""The genetic prompt search for language-induced adversarial images (Zhu et al., ACM MM 2024).

Each generation keeps the ``elite`` best prompts, fills the rest by tournament selection, uniform
crossover (probability ``crossover_rate``) and per-slot mutation (probability ``mutation_rate``), and
scores new prompts once (memoised). Fitness is ``ASR`` for feasible prompts (``SEM ≥ τ``) and
``−(τ − SEM)`` otherwise, so any feasible prompt beats any infeasible one and infeasible ones are pulled
towards the constraint. **Word-space pruning** drops, before the search, every word whose one-word
prompt already violates the SEM constraint, and optionally keeps only the ``prune_top_k`` words with the
highest one-word ASR. :func:`language_search` is registered in :data:`vlmkit.registry.TASKS` as
``"language_adversarial"`` (``kind="search"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.metrics.language import attack_success_rate, semantic_consistency
from vlmkit.registry import TASKS
from vlmkit.results import make_row
from vlmkit.search.config import SearchConfig, build_prompt, image_seed, toy_word_space
from vlmkit.search.generators import DiffusersGenerator, TextToImage, ToyWorldGenerator
from vlmkit.search.result import LanguageSearchResult, classify


class _Scorer:
    """Memoised ASR/SEM of prompts for one true class."""

    def __init__(self, target: Any, classifier: torch.Tensor, sem_model: Any, generator: TextToImage, cls: str,
                 y: int, cfg: SearchConfig) -> None:
        self.target, self.classifier, self.sem_model, self.generator = target, classifier, sem_model, generator
        self.cls, self.y, self.cfg = cls, y, cfg
        with torch.inference_mode():
            self.ref = sem_model.encode_text([cfg.reference_template.format(cls=cls)])[0]
        self.memo: dict[str, tuple[float, float, bool]] = {}
        self.check = getattr(generator, "depicts", None)

    def sem(self, prompts: Sequence[str]) -> list[float]:
        with torch.inference_mode():
            return semantic_consistency(self.sem_model.encode_text(list(prompts)), self.ref.to(self.sem_model.device)
                                        ).tolist()

    def asr(self, prompt: str) -> float:
        x = self.generator(prompt, self.cfg.images_per_prompt, image_seed(self.cfg))
        return attack_success_rate(classify(self.target, self.classifier, x), self.y)

    def __call__(self, prompts: Sequence[str]) -> list[tuple[float, float, bool]]:
        """``(ASR, SEM, depicts)`` per prompt."""
        new = [p for p in dict.fromkeys(prompts) if p not in self.memo]
        if new:
            for p, s in zip(new, self.sem(new)):
                self.memo[p] = (self.asr(p), float(s), bool(self.check(p, self.cls)) if self.check else True)
        return [self.memo[p] for p in prompts]

    def fitness(self, asr: float, sem: float, depicts: bool = True) -> float:
        """ASR when feasible; ``−(τ − SEM)`` when SEM is too low; −1 when ``G(p)`` does not show the class."""
        tau = self.cfg.sem_threshold
        if not depicts:
            return -1.0
        return asr if sem >= tau else -(tau - sem)


def _search_class(scorer: _Scorer, space: list[str], cfg: SearchConfig, rng: np.random.Generator
                  ) -> list[dict[str, Any]]:
    """The genetic search for one true class over ``space`` (index 0 = the empty word); one history row per
    scored prompt per generation."""
    V = len(space)
    pop = [tuple(int(i) for i in rng.integers(0, V, cfg.words)) for _ in range(cfg.population)]
    pop[0] = tuple([0] * cfg.words)  # index 0 is the empty word: the plain class prompt as a reference
    rows: list[dict[str, Any]] = []
    for gen in range(cfg.generations + 1):
        prompts = [build_prompt(cfg.template, [space[i] for i in g], scorer.cls) for g in pop]
        scores = scorer(prompts)
        fit = [scorer.fitness(*sc) for sc in scores]
        order = sorted(range(len(pop)), key=lambda i: (-fit[i], -scores[i][1], prompts[i]))
        for rank, i in enumerate(order):
            rows.append({"class": scorer.cls, "generation": gen, "rank": rank, "prompt": prompts[i],
                         "words": json.dumps([space[j] for j in pop[i]]), "asr": scores[i][0], "sem": scores[i][1],
                         "depicts": scores[i][2], "fitness": fit[i],
                         "feasible": scores[i][1] >= cfg.sem_threshold and scores[i][2]})
        if gen == cfg.generations:
            break

        def pick() -> tuple[int, ...]:
            cand = rng.choice(len(pop), size=min(cfg.tournament, len(pop)), replace=False)
            return pop[max(cand, key=lambda i: (fit[i], scores[i][1]))]

        nxt = [pop[i] for i in order[: cfg.elite]]
        while len(nxt) < cfg.population:
            a, b = pick(), pick()
            if rng.random() < cfg.crossover_rate:
                take = rng.random(cfg.words) < 0.5
                child = [a[j] if take[j] else b[j] for j in range(cfg.words)]
            else:
                child = list(a)
            for j in range(cfg.words):
                if rng.random() < cfg.mutation_rate:
                    child[j] = int(rng.integers(0, V))
            nxt.append(tuple(child))
        pop = nxt
    return rows


@TASKS.register("language_adversarial", kind="search",
                description="genetic prompt search for language-induced adversarial images (ASR under a SEM "
                            "constraint)")
def language_search(target: Any, classnames: Sequence[str], classes: Sequence[str] | str | None = None, *,
                    generator: TextToImage | str = "toyworld", sem_model: Any = None,
                    word_space: Sequence[str] | Callable[[str], Sequence[str]] | None = None,
                    config: SearchConfig | None = None, progress: bool = False, **overrides: Any
                    ) -> LanguageSearchResult:
    """Search prompts whose generated images fool ``target`` while meaning the true class.

    Args:
        target: The target classifier, a :class:`vlmkit.VLM` (zero-shot over ``classnames``) or a spec
            string for :func:`vlmkit.load_model` (e.g. ``"toy:rn"``).
        classnames: The classifier's classes.
        classes: True classes to attack (default: every class).
        generator: ``G`` — a :class:`TextToImage` callable, or ``"toyworld"`` / a diffusers id/folder
            (``"diffusers:<id>"``).
        sem_model: The CLIP whose text encoder measures SEM (default: ``target``); a VLM or a spec.
        word_space: Candidate words (or ``cls -> words``); default :func:`toy_word_space` for the toy world.
        config: Search hyper-parameters (:class:`SearchConfig`); keyword ``overrides`` replace fields.
        progress: Show a progress bar over classes.

    Returns:
        A :class:`LanguageSearchResult`.

    Raises:
        InputError: Unknown classes, an empty word space, or nothing left after pruning.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from vlmkit.models import load_model
    from vlmkit.models.zeroshot import zero_shot_classifier

    cfg = replace(config or SearchConfig(), **overrides) if overrides else (config or SearchConfig())
    target = load_model(target) if isinstance(target, str) else target
    sem_model = target if sem_model is None else (load_model(sem_model) if isinstance(sem_model, str) else sem_model)
    if isinstance(generator, str):
        generator = (ToyWorldGenerator(size=max(getattr(target, "image_size", (64, 64))))
                     if generator == "toyworld" else DiffusersGenerator(generator.removeprefix("diffusers:")))
    classnames = [str(c) for c in classnames]
    todo = classnames if classes is None else ([classes] if isinstance(classes, str) else list(classes))
    unknown = [c for c in todo if c not in classnames]
    if unknown:
        raise InputError(f"classes {unknown} are not in classnames {classnames}")
    classifier = zero_shot_classifier(target, classnames, list(cfg.classifier_templates))
    rng = np.random.default_rng([cfg.seed, 0x1A5E])
    history: list[dict[str, Any]] = []
    space_rows: list[dict[str, Any]] = []
    for cls in tqdm(todo, desc="language search", disable=not progress):
        scorer = _Scorer(target, classifier, sem_model, generator, cls, classnames.index(cls), cfg)
        words = list(word_space(cls) if callable(word_space) else (word_space or toy_word_space(cls)))
        words = [w for w in dict.fromkeys(str(w).strip() for w in words) if w]
        if not words:
            raise InputError("word_space is empty: give at least one candidate word")
        one = [build_prompt(cfg.template, [w], cls) for w in words]
        sems = scorer.sem(one)
        kept = [w for w, s in zip(words, sems) if s >= cfg.sem_threshold]
        asr1: dict[str, float] = {}
        if cfg.prune_top_k is not None and len(kept) > cfg.prune_top_k:
            for w, (a, _, ok) in zip(kept, scorer([build_prompt(cfg.template, [w], cls) for w in kept])):
                asr1[w] = a if ok else -1.0
            kept = sorted(kept, key=lambda w: (-asr1[w], kept.index(w)))[: cfg.prune_top_k]
        for w, s in zip(words, sems):
            space_rows.append({"class": cls, "word": w, "sem": float(s), "asr": asr1.get(w, float("nan")),
                               "kept": w in kept})
        if not kept:
            raise InputError(f"word-space pruning left no word for class {cls!r}: every one-word prompt has "
                             f"SEM < {cfg.sem_threshold}; lower sem_threshold or widen the word space")
        history += _search_class(scorer, [""] + kept, cfg, rng)
    hist = pd.DataFrame(history)
    curves = _curves(hist, cfg, getattr(target, "name", type(target).__name__), getattr(generator, "name", "G"))
    return LanguageSearchResult(hist, curves, pd.DataFrame(space_rows), cfg, classnames, generator, target, classifier)


def _curves(hist: pd.DataFrame, cfg: SearchConfig, model: str, gen_name: str) -> pd.DataFrame:
    rows = []
    for (cls, gen), g in hist.groupby(["class", "generation"], sort=True):
        top = g.sort_values("rank").iloc[0]
        feas = g[g["feasible"]]
        plain = hist[(hist["class"] == cls) & (hist["words"] == json.dumps([""] * cfg.words))]
        vals = {"asr_best": float(top["asr"]), "asr_mean": float(g["asr"].mean()),
                "asr_plain": float(plain["asr"].iloc[0]) if len(plain) else float("nan"),
                "asr_best_feasible": float(feas["asr"].max()) if len(feas) else float("nan"),
                "sem_best": float(top["sem"]), "sem_mean": float(g["sem"].mean()),
                "fitness_best": float(top["fitness"]), "feasible_share": float(g["feasible"].mean())}
        for k, v in vals.items():
            rows.append(make_row(model=model, dataset=f"{gen_name}:{cls}", perturbation="language_search",
                                 params={"generation": int(gen), "class": cls}, severity=int(gen), metric=k, value=v,
                                 n=len(g), seed=cfg.seed, family="language", kind="search", generation=int(gen),
                                 **{"class": cls}))
    return pd.DataFrame(rows)


__all__ = ["language_search"]
