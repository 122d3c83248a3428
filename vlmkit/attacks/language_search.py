"""Language-induced adversarial examples: a genetic search over prompt words.

A text-to-image generator ``G`` turns a prompt ``p`` into images; ``p`` is adversarial for a target
classifier ``f`` and true class ``y`` when the images it generates are misclassified while the
prompt still means ``y``. With ``n`` images per prompt, the search maximises the attack success rate
subject to semantic consistency (the natural-adversarial study's equations 1–2)::

    ASR(p) = 1/n Σ_i 1[f(G(p, s_i)) ≠ y]                                  (1)
    SEM(p) = cos(E_T(p), E_T(t_y)) ≥ τ                                     (2)

where ``E_T`` is a CLIP text encoder, ``t_y`` the true-class prompt (``"a photo of a {y}"``) and
``s_i`` fixed seeds shared by every prompt (common random numbers, so prompts compare fairly).

The genome is a fixed number of word slots over a word space (``""`` = an empty slot); a prompt is
``template.format(words=..., cls=y)``. Each generation keeps the ``elite`` best, fills the rest by
tournament selection, uniform crossover (probability ``crossover_rate``) and per-slot mutation
(probability ``mutation_rate``), and scores new prompts once (memoised). Fitness is ``ASR`` for
feasible prompts (``SEM ≥ τ``) and ``−(τ − SEM)`` otherwise, so any feasible prompt beats any
infeasible one and infeasible ones are pulled towards the constraint. **Word-space pruning** drops,
before the search, every word whose one-word prompt already violates (2), and optionally keeps only
the ``prune_top_k`` words with the highest one-word ASR.

``G`` is pluggable: :class:`ToyWorldGenerator` (the toy world's renderer, :func:`vlmkit.toyworld.render`)
or :class:`DiffusersGenerator` (a ``diffusers`` text-to-image pipeline, imported lazily; optional).
Outputs (:class:`LanguageSearchResult`): every scored prompt per generation, tidy ASR/SEM curves,
the pruned word space, and — via :meth:`LanguageSearchResult.write_images` — the adversarial images
in the labelled-images layout (``images/``, ``labels.csv``, ``classes.txt``) that
:func:`vlmkit.data.load_labelled_csv` reads back, so every other metric of the kit runs on them.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.registry import METRICS, TASKS
from vlmkit.results import make_row


class TextToImage(Protocol):
    """``G``: ``(prompt, n, seed) -> (n, 3, H, W)`` float images in [0, 1], deterministic given ``seed``.

    A generator that knows its ground truth may also define ``depicts(prompt, cls) -> bool`` (whether
    ``G(prompt)`` shows the true class); prompts for which it is False are never counted as adversarial.
    """

    name: str

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor: ...


class ToyWorldGenerator:
    """The toy world's renderer as ``G`` (:func:`vlmkit.toyworld.render`): image ``i`` uses seed ``seed + i``.

    Args:
        size: Image side in pixels.
    """

    name = "toyworld"

    def __init__(self, size: int = 64) -> None:
        self.size = int(size)

    def depicts(self, prompt: str, cls: str) -> bool:
        """Ground truth: the parsed prompt draws exactly one object and it has the class's shape (or
        colour, for colour classes) — e.g. ``'a "heart" "circle" star'`` fails, since the grammar reads
        the second quoted word as a second shape."""
        from vlmkit.toyworld import COLOR_NAMES, SHAPES, parse_prompt

        objs = parse_prompt(prompt).objects
        if cls in SHAPES:
            return [o["shape"] for o in objs] == [cls]
        if cls in COLOR_NAMES:
            return len(objs) == 1 and objs[0].get("color", cls) == cls
        return True

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor:
        from vlmkit.toyworld import render

        try:
            return torch.stack([render(prompt, seed=seed + i, size=self.size).to_tensor() for i in range(n)])
        except ValueError as e:
            raise InputError(f"the toy world cannot render prompt {prompt!r}: {e}") from e


class DiffusersGenerator:
    """A ``diffusers`` text-to-image pipeline as ``G`` (optional extra: ``pip install diffusers``).

    Args:
        pipeline: A loaded pipeline (anything called as ``pipe(prompt, num_images_per_prompt=n,
            generator=..., output_type="pt", ...)`` returning ``.images`` ``(n, 3, H, W)`` in [0, 1]), or
            a hub id / local folder loaded with ``diffusers.AutoPipelineForText2Image`` (offline-aware).
        steps: Denoising steps.
        guidance_scale: Classifier-free guidance scale.
        size: Output side (``height = width``), or None for the pipeline's default.
        device: Where the pipeline runs ("auto", "cpu", "cuda").
        dtype: Pipeline dtype when loading by id (e.g. "fp16").
        name: Name in result tables (default: the id or the pipeline's class).
    """

    def __init__(self, pipeline: Any, *, steps: int = 25, guidance_scale: float = 7.5, size: int | None = None,
                 device: str = "auto", dtype: str | torch.dtype | None = None, name: str | None = None) -> None:
        from vlmkit.runtime import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        if isinstance(pipeline, (str, os.PathLike)):
            pipeline_id = str(pipeline)
            try:
                import diffusers
            except ImportError as e:
                raise ImportError("DiffusersGenerator needs the optional 'diffusers' package: pip install diffusers "
                                  "(or pass a loaded pipeline object)") from e
            from vlmkit.models import hub

            kw = {"local_files_only": True} if hub.offline() and not hub.looks_like_path(pipeline_id) else {}
            pipe = hub.fetch_or_explain(
                f"diffusers pipeline {pipeline_id!r}",
                lambda: diffusers.AutoPipelineForText2Image.from_pretrained(
                    pipeline_id, torch_dtype=resolve_dtype(dtype, self.device), **kw),
                local_hint="a local folder saved with pipeline.save_pretrained(folder)",
                cached=(hub.looks_like_path(pipeline_id)
                        or hub.cached_hub_file(pipeline_id, "model_index.json") is not None))
            self.pipeline = pipe.to(self.device)
            self.name = name or pipeline_id
        else:
            self.pipeline = pipeline
            self.name = name or type(pipeline).__name__
        self.steps, self.guidance_scale, self.size = int(steps), float(guidance_scale), size

    def __call__(self, prompt: str, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        kw: dict[str, Any] = {"num_images_per_prompt": n, "num_inference_steps": self.steps,
                              "guidance_scale": self.guidance_scale, "generator": g, "output_type": "pt"}
        if self.size:
            kw.update(height=self.size, width=self.size)
        images = self.pipeline(prompt, **kw).images
        images = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        return images.float().clamp(0, 1).cpu()


GENERATORS: dict[str, Callable[..., TextToImage]] = {"toyworld": ToyWorldGenerator, "diffusers": DiffusersGenerator}


@METRICS.register("attack_success_rate", kind="predictions")
def attack_success_rate(pred: torch.Tensor, true: int | torch.Tensor) -> float:
    """ASR: share of predictions that are not the true class (equation 1)."""
    return float((pred != torch.as_tensor(true, device=pred.device)).float().mean())


@METRICS.register("semantic_consistency", kind="embedding")
def semantic_consistency(text_emb: torch.Tensor, reference_emb: torch.Tensor) -> torch.Tensor:
    """SEM: cosine similarity of prompt embeddings ``(P, D)`` to the true-class prompt's ``(D,)`` (equation 2)."""
    return F.normalize(text_emb.float(), dim=-1) @ F.normalize(reference_emb.float().reshape(-1), dim=0)


@dataclass(frozen=True)
class SearchConfig:
    """Hyper-parameters of the genetic search.

    Attributes:
        population: Prompts per generation.
        generations: Generations after the initial population.
        words: Word slots per prompt (empty slots allowed).
        crossover_rate: Probability that a child mixes two parents (uniform crossover), else copies one.
        mutation_rate: Probability that each slot of a child is replaced by a random word.
        elite: Best prompts carried over unchanged.
        tournament: Tournament size of parent selection.
        sem_threshold: τ of equation 2.
        prune_top_k: Keep only the k words of highest one-word ASR after the SEM filter (None: keep all).
        images_per_prompt: ``n`` of equation 1.
        template: Prompt format with ``{words}`` and ``{cls}``.
        reference_template: The true-class prompt ``t_y`` with ``{cls}``.
        classifier_templates: Zero-shot templates of the target classifier (``{}`` = class name).
        seed: Seeds the search and the generator's image seeds.
    """

    population: int = 16
    generations: int = 10
    words: int = 3
    crossover_rate: float = 0.8
    mutation_rate: float = 0.2
    elite: int = 2
    tournament: int = 3
    sem_threshold: float = 0.8
    prune_top_k: int | None = None
    images_per_prompt: int = 4
    template: str = "a {words} {cls}"
    reference_template: str = "a photo of a {cls}"
    classifier_templates: tuple[str, ...] = ("a photo of a {}",)
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("population", "words", "images_per_prompt", "tournament"):
            if int(getattr(self, k)) < 1:
                raise InputError(f"{k}={getattr(self, k)!r} must be >= 1")
        if self.generations < 0:
            raise InputError(f"generations={self.generations} must be >= 0")
        if not 0 <= self.elite <= self.population:
            raise InputError(f"elite={self.elite} must be in [0, population={self.population}]")
        for k in ("crossover_rate", "mutation_rate"):
            if not 0.0 <= float(getattr(self, k)) <= 1.0:
                raise InputError(f"{k}={getattr(self, k)!r} must be in [0, 1]")
        if "{words}" not in self.template or "{cls}" not in self.template:
            raise InputError(f"template {self.template!r} needs both '{{words}}' and '{{cls}}'")
        if "{cls}" not in self.reference_template:
            raise InputError(f"reference_template {self.reference_template!r} needs '{{cls}}'")
        if self.prune_top_k is not None and self.prune_top_k < 1:
            raise InputError(f"prune_top_k={self.prune_top_k} must be >= 1 or None")


def toy_word_space(classname: str | None = None) -> list[str]:
    """Default word space for the toy world: colours, sizes, positions, backgrounds and quoted sign words.

    Quoted words (``'"circle"'``) make the renderer write the word on a sign — the typographic route
    to misclassification. Bare shape names are left out (they would add a second object, which SEM
    is there to reject but which wastes the search); ``classname``'s own quoted word is kept.
    """
    from vlmkit.toyworld import COLOR_NAMES, WORDS
    from vlmkit.toyworld.grammar import BACKGROUND_WORDS, POSITION_PHRASES

    words = list(COLOR_NAMES) + ["small", "large"]
    words += [ps[0] for ps in POSITION_PHRASES.values()]
    words += [f"{w} background" for w in BACKGROUND_WORDS.values()]
    words += [f'"{w}"' for w in WORDS]
    return words


def build_prompt(template: str, words: Sequence[str], cls: str) -> str:
    """``template`` with the non-empty ``words`` joined by spaces and the class name, whitespace collapsed."""
    return " ".join(template.format(words=" ".join(w for w in words if w), cls=cls).split())


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
        seed = _image_seed(self.config) if seed is None else int(seed)
        rows, prompts = [], []
        for j, r in enumerate(best.to_dict("records")):
            cls, prompt = r["class"], r["prompt"]
            x = self.generator(prompt, n, seed)
            pred = _classify(self.target, self.classifier, x)
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


def _image_seed(cfg: SearchConfig) -> int:
    return 1_000_003 * (cfg.seed + 1)


def _classify(target: Any, classifier: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        emb = target.encode_image(x.to(target.device))
        return target.similarity(emb, classifier.to(emb.device)).argmax(1).cpu()


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
        x = self.generator(prompt, self.cfg.images_per_prompt, _image_seed(self.cfg))
        return attack_success_rate(_classify(self.target, self.classifier, x), self.y)

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

    from vlmkit.metrics import build_zero_shot_classifier
    from vlmkit.models import load_model

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
    classifier = build_zero_shot_classifier(target, classnames, list(cfg.classifier_templates))
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


TASKS.add("language_adversarial", language_search, kind="search",
          description="genetic prompt search for language-induced adversarial images (ASR under a SEM constraint)")

__all__ = ["DiffusersGenerator", "GENERATORS", "LanguageSearchResult", "SearchConfig", "TextToImage",
           "ToyWorldGenerator", "attack_success_rate", "build_prompt", "language_search", "semantic_consistency",
           "toy_word_space"]
