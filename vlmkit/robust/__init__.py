"""Adversarial fine-tuning of any loaded CLIP: FARE and TeCoA.

Make your own robust variant of the model you study, at a budget you choose, and compare it with the
base model under one protocol::

    from vlmkit.robust import RobustConfig, finetune
    res = finetune(RobustConfig(method="fare", model="toy:rn", eps="4/255", steps=300, out="outputs/robust/rn-fare"))
    vlm = vlmkit.load_model(res.spec)   # "open_clip:local-dir:.../model"; provenance in vlm.meta["robust"]

or from a params file: ``vlmkit robust params/robust/toy.yaml`` (``--only NAME``, ``--steps N``).

* :mod:`~vlmkit.robust.methods` — FARE (Schlarmann et al., ICML 2024) and TeCoA (Mao et al., ICLR 2023);
* :mod:`~vlmkit.robust.finetune` — the resumable, deterministic loop;
* :mod:`~vlmkit.robust.towers` — image-tower parameters per family, saving in the family's format;
* :mod:`~vlmkit.robust.data` — training/held-out images by step;
* :mod:`~vlmkit.robust.config` — :class:`RobustConfig` and :func:`load_runs`.
"""

from vlmkit.results import provenance_label
from vlmkit.robust.config import METHODS, RobustConfig, load_runs, parse_eps
from vlmkit.robust.data import FinetuneData, load_finetune_data
from vlmkit.robust.finetune import FinetuneResult, finetune, heldout_metrics
from vlmkit.robust.methods import FARE, Method, TeCoA, make_method
from vlmkit.robust.towers import (
    frozen_parameters,
    image_tower_parameters,
    read_provenance,
    save_finetuned,
)

__all__ = [
    "FARE", "METHODS", "FinetuneData", "FinetuneResult", "Method", "RobustConfig", "TeCoA", "finetune",
    "frozen_parameters", "heldout_metrics", "image_tower_parameters", "load_finetune_data", "load_runs",
    "make_method", "parse_eps", "provenance_label", "read_provenance", "save_finetuned",
]
