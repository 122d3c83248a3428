"""Configuration and prompts of the language-induced adversarial search (Zhu et al., ACM MM 2024).

The genome is a fixed number of word slots over a word space (``""`` = an empty slot); a prompt is
``template.format(words=..., cls=y)`` (:func:`build_prompt`). :class:`SearchConfig` holds the genetic
algorithm's hyper-parameters and the SEM threshold ``τ``; :func:`toy_word_space` is the default word
space for the toy world.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vlmkit.errors import InputError


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


def image_seed(cfg: SearchConfig) -> int:
    """Seed of the generator's images: the same for every prompt (common random numbers), set by ``cfg.seed``."""
    return 1_000_003 * (cfg.seed + 1)


__all__ = ["SearchConfig", "build_prompt", "image_seed", "toy_word_space"]
