"""Language-induced adversarial search: a genetic search over prompt words whose output is an image set.

Zhu, Xu, Zeng, Dong & Hu, "Natural Language Induced Adversarial Images" (ACM Multimedia 2024; the
natural-adversarial study's equations 1–2). Unlike :mod:`vlmkit.attacks` there is no ε-ball and no
gradient: a text-to-image generator ``G`` turns a prompt ``p`` into images, and ``p`` is adversarial for
a target classifier ``f`` and true class ``y`` when the images it generates are misclassified while the
prompt still means ``y``. With ``n`` images per prompt, the search maximises the attack success rate
subject to semantic consistency::

    ASR(p) = 1/n Σ_i 1[f(G(p, s_i)) ≠ y]                                  (1)
    SEM(p) = cos(E_T(p), E_T(t_y)) ≥ τ                                     (2)

where ``E_T`` is a CLIP text encoder, ``t_y`` the true-class prompt (``"a photo of a {y}"``) and ``s_i``
fixed seeds shared by every prompt (common random numbers, so prompts compare fairly). ASR and SEM are
metrics on tensors (:mod:`vlmkit.metrics.language`).

Modules:

* :mod:`.generators` — ``G``: :class:`ToyWorldGenerator` (the toy world's renderer, with ground truth)
  or :class:`DiffusersGenerator` (a ``diffusers`` pipeline, optional);
* :mod:`.config` — :class:`SearchConfig`, :func:`build_prompt`, :func:`toy_word_space`;
* :mod:`.genetic` — :func:`language_search`, the genetic algorithm with word-space pruning, registered in
  :data:`vlmkit.registry.TASKS` as ``"language_adversarial"`` (``kind="search"``);
* :mod:`.result` — :class:`LanguageSearchResult`: every scored prompt per generation, tidy ASR/SEM
  curves, the pruned word space, and :meth:`LanguageSearchResult.write_images`, which writes the
  adversarial images in the labelled-images layout that :func:`vlmkit.data.load_labelled_csv` reads back.

Example::

    from vlmkit.search import language_search
    res = language_search("toy:rn", vlmkit.toyworld.SHAPES, ["star"], population=16, generations=10)
    res.write_images("outputs/adv_star")
"""

from vlmkit.search.config import SearchConfig, build_prompt, toy_word_space
from vlmkit.search.generators import GENERATORS, DiffusersGenerator, TextToImage, ToyWorldGenerator
from vlmkit.search.genetic import language_search  # registers TASKS["language_adversarial"]
from vlmkit.search.result import LanguageSearchResult

__all__ = ["DiffusersGenerator", "GENERATORS", "LanguageSearchResult", "SearchConfig", "TextToImage",
           "ToyWorldGenerator", "build_prompt", "language_search", "toy_word_space"]
