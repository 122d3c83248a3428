"""A toy captioner for the model organism: a small decoder on a toy-world image tower (``toycap:rn``).

The generative counterpart of the shipped toy CLIPs, so that caption and question-answering metrics
(object hallucination, omissions, yes/no consistency) run offline against a model whose training
data and ground truth are known. The design follows the encoder-decoder captioners (Vinyals et al.,
"Show and Tell", CVPR 2015; cross-attention to image patches as in the Transformer of Vaswani et
al., NeurIPS 2017 and CoCa's captioning head, Yu et al. 2022):

* image side: the image tower of a shipped toy CLIP (``toy:rn``, open_clip's ModifiedResNet, for the
  shipped captioner; ``toy:vit`` works too). Its first layers stay frozen and are *not* shipped
  again: they load from the toy checkpoint, whose SHA-256 is recorded in the captioner's
  ``config.json`` and verified on load. Its last ``train_blocks`` stages (ResNet ``layer2`` and
  ``layer3``; or ViT blocks and ``ln_post``) are copied into the captioner and fine-tuned, and give
  one token per cell of the 8×8 grid (plus a class/mean token), projected to the decoder width. The
  frozen towers alone name small shapes poorly (a linear probe of 3×3 windows of patch tokens gets
  ~0.77 of them right for ``toy:vit``, ~0.90 for ``toy:rn``'s ``layer2``), and the ViT learns them
  too slowly for a 20-minute CPU budget (README). While training, a linear read-out of the tokens
  (not shipped) adds dense supervision from the renderer's ground truth: the shape on top of each
  patch (an auxiliary loss in the spirit of deep supervision, Lee et al., AISTATS 2015);
* text side: a word-level :class:`~.caption_text.Vocabulary` over the caption grammar plus ``<pad> <bos> <eos>
  <unk>`` and the prompt/question words, and a pre-norm causal transformer decoder whose blocks
  attend to the image tokens (self-attention, cross-attention, MLP);
* a prompt selects the task: ``"describe:"`` asks for the caption :func:`~.caption_text.target_caption` (every
  visible object with size, colour, shape and position in a fixed reading order, and the sign), ``"question: is there a red star ? answer:"`` asks for ``yes`` / ``no``.

Loading: ``load_toy_captioner("rn")`` (or the spec ``"toycap:rn"``). Training:
``python -m vlmkit.toyworld.caption_train --config vlmkit/toyworld/configs/toycap_rn.json --out
vlmkit/toyworld/captioner/rn``. Held-out quality: :func:`vlmkit.toyworld.caption_train.evaluate_captioner`
(CHAIR-i, CHAIR-s, object recall, yes/no accuracy).

This module holds :class:`ToyCaptioner` and the loaders; the text side (vocabulary, prompts,
targets) is in :mod:`.caption_text`, the decoder and image head in :mod:`.caption_net`, training,
evaluation and the CLI in :mod:`.caption_train`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelSpecError, WeightsNotFoundError, did_you_mean
from ..validate import check_images
from .caption_net import (
    CaptionDecoder,
    ImageHead,
    beam_decode,
    file_sha256,
    frozen_tokens,
    greedy_decode,
    load_tower,
    step_logp,
)
from .caption_text import BOS, DESCRIBE_PROMPT, EOS, PAD, Vocabulary, question_prompt
from .train import MEAN, STD

#: Folder of the shipped captioners (one sub-folder per name).
CAPTIONER_ROOT: Path = Path(__file__).resolve().parent / "captioner"
#: Spec prefix of the captioners (``toycap:rn``).
SPEC_PREFIX: str = "toycap"

_FILES = ("model.safetensors", "config.json")


# ----------------------------------------------------------------------------------------------------
# The captioner
# ----------------------------------------------------------------------------------------------------


class ToyCaptioner(nn.Module):
    """A captioner and yes/no answerer on the toy world (toy CLIP tower with fine-tuned last stages + small decoder).

    Attributes:
        name: The spec it answers to, e.g. ``"toycap:rn"``.
        spec: Same as ``name``.
        image_size: ``(H, W)`` of the tower's input; other sizes are resized (bicubic) inside.
        vocab: The :class:`~.caption_text.Vocabulary`.
        config: The ``config.json`` dict (architecture, vocabulary, tower and its SHA-256).
        meta: The training record (``training.json``), when loaded from a folder.
    """

    family = "toycap"

    def __init__(self, tower: nn.Module, config: dict[str, Any], name: str = "rn") -> None:
        super().__init__()
        self.config = config
        self.name = self.spec = f"{SPEC_PREFIX}:{name}"
        self.vocab = Vocabulary(config["vocab"])
        side = int(config["image_size"])
        self.image_size: tuple[int, int] = (side, side)
        self.train_blocks = int(config["train_blocks"])
        self.tower = tower.eval().requires_grad_(False)
        self.image = ImageHead(tower, self.train_blocks)
        d = config["decoder"]
        self.decoder = CaptionDecoder(len(self.vocab), int(config["feat_dim"]), int(config["n_tokens"]), d["width"],
                                d["layers"], d["heads"], d["mlp_ratio"], d["max_len"])
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.meta: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> ToyCaptioner:
        """Switch the image head and decoder to ``mode``; the frozen tower stays in eval mode."""
        super().train(mode)
        self.tower.eval()
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a captioner folder ships: the decoder and the image head (not the frozen tower)."""
        sd = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        sd.update({f"image.{k}": v for k, v in self.image.state_dict().items()})
        return {k: v.detach().float().contiguous() for k, v in sd.items()}

    # -- image side ---------------------------------------------------------------------------------

    def tower_input(self, images: torch.Tensor) -> torch.Tensor:
        """The tower's input: float images in [0, 1] resized to :attr:`image_size` (bicubic) and normalised."""
        x = images.to(self.device, torch.float32)  # (B, 3, H, W) in [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens the decoder attends to, ``(B, 1 + N, C)``, of float images in [0, 1] (differentiable)."""
        return self.image(frozen_tokens(self.tower, self.tower_input(images), self.train_blocks))

    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``(B, C)``: the mean of the captioner's patch tokens (for drift).

        The tokens are those the decoder reads (the frozen start of the toy tower, then the
        captioner's fine-tuned last stages), averaged over the grid cells.
        """
        check_images(images, "images", allow_empty=False)
        with torch.no_grad():
            return self.image_features(images)[:, 1:].mean(1).float()

    # -- sequences ----------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str | None) -> list[int]:
        return [BOS, *self.vocab.encode(DESCRIBE_PROMPT if prompt is None else question_prompt(prompt))]

    def _teacher_forced(self, feats: torch.Tensor, prompts: Sequence[list[int]], targets: Sequence[list[int]]
                        ) -> torch.Tensor:
        """Per-token log-probs of ``targets`` after ``prompts`` ``(B, T_max)`` (0 at padding)."""
        seqs = [p + t for p, t in zip(prompts, targets)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
        tgt_mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (p, s) in enumerate(zip(prompts, seqs)):
            ids[i, : len(s)] = torch.tensor(s)
            tgt_mask[i, len(p) : len(s)] = True
        ids, tgt_mask = ids.to(self.device), tgt_mask.to(self.device)
        logp = self.decoder(ids[:, :-1], self.decoder.memory(feats)).float().log_softmax(-1)  # (B, T-1, V)
        tok = logp.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1): log p(ids[t+1] | ids[:t+1])
        return tok.masked_fill(~tgt_mask[:, 1:], 0.0)

    def caption_nll(self, images: torch.Tensor, captions: Sequence[str], prompt: str | None = None) -> torch.Tensor:
        """Teacher-forced negative log-likelihood of each caption (its tokens and ``<eos>``), ``(B,)``.

        Differentiable with respect to ``images`` (the tower's parameters are frozen): the objective
        of caption attacks. ``-caption_nll`` is the sequence log-probability :meth:`generate` maximises.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].
            captions: ``B`` texts.
            prompt: Task prompt (``None``: :data:`~.caption_text.DESCRIBE_PROMPT`; a question is wrapped by
                :func:`~.caption_text.question_prompt`).
        """
        check_images(images, "images", allow_empty=False)
        if isinstance(captions, str) or len(captions) != len(images):
            raise InputError(f"captions must be a sequence of {len(images)} strings (one per image), got {captions!r:.80}")
        p = self._prompt_ids(prompt)
        feats = self.image_features(images)
        return -self._teacher_forced(feats, [p] * len(captions), [self.vocab.encode(c) + [EOS] for c in captions]).sum(1)

    def forward(self, images: torch.Tensor, captions: Sequence[str], prompt: str | None = None) -> torch.Tensor:
        """Same as :meth:`caption_nll`."""
        return self.caption_nll(images, captions, prompt)

    def option_logliks(
        self, images: torch.Tensor, questions: Sequence[str], options: Sequence[Sequence[str]]
    ) -> torch.Tensor:
        """Sum of token log-probabilities of each option after its question's prompt, ``(B, K_max)``.

        The prompt is :func:`~.caption_text.question_prompt` of the question; an option's score is
        ``Σ_j log p(a_j | prompt, a_<j)`` over its tokens (no ``<eos>``), as in
        :func:`vlmkit.tasks.adapters.option_logliks`. Items with fewer options are padded with
        ``-inf``. Differentiable with respect to ``images``.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].
            questions: ``B`` questions (e.g. ``"is there a star ?"``).
            options: ``B`` option lists (e.g. ``[["yes", "no"]] * B``).
        """
        check_images(images, "images", allow_empty=False)
        if isinstance(questions, str) or len(questions) != len(images):
            raise InputError(f"questions must be a sequence of {len(images)} strings, got {questions!r:.80}")
        if len(options) != len(images) or any(isinstance(o, str) or not len(o) for o in options):
            raise InputError(f"options must be {len(images)} non-empty lists of option strings, got {options!r:.80}")
        answers = [[self.vocab.encode(o) for o in opts] for opts in options]
        for opts, enc in zip(options, answers):
            for o, a in zip(opts, enc):
                if not a:
                    raise InputError(f"option {o!r} tokenises to no tokens")
        feats = self.image_features(images)  # (B, M, C)
        rows, prompts, targets = [], [], []
        for i, (q, enc) in enumerate(zip(questions, answers)):
            p = self._prompt_ids(q)
            for a in enc:
                rows.append(i)
                prompts.append(p)
                targets.append(a)
        tok = self._teacher_forced(feats[torch.tensor(rows, device=feats.device)], prompts, targets)  # (R, T)
        scores = tok.sum(1)
        k = max(len(o) for o in options)
        out = torch.full((len(images), k), float("-inf"), device=scores.device)
        j = 0
        for i, enc in enumerate(answers):
            out[i, : len(enc)] = scores[j : j + len(enc)]
            j += len(enc)
        return out

    def answer(self, images: torch.Tensor, questions: Sequence[str], options: Sequence[str] = ("yes", "no")) -> list[str]:
        """The higher-scoring option of each question (default ``yes`` / ``no``)."""
        with torch.no_grad():
            idx = self.option_logliks(images, questions, [list(options)] * len(images)).argmax(1).tolist()
        return [options[i] for i in idx]

    # -- generation ---------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        prompt: str | None = None,
        *,
        num_beams: int = 1,
        max_new_tokens: int = 40,
    ) -> list[str]:
        """Captions (or answers) of a batch: greedy for ``num_beams == 1``, beam search otherwise.

        Beam search keeps the ``num_beams`` best partial sequences by summed log-probability (no
        length penalty), moves those that emit ``<eos>`` to a finished pool, and stops an item when
        its best finished sequence scores at least as high as its best live one (log-probabilities
        only decrease as a sequence grows) or after ``max_new_tokens`` tokens (``<eos>`` included).
        Special tokens other than ``<eos>`` are never emitted. Deterministic.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1].
            prompt: ``None`` (caption) or a question / prompt (see :func:`~.caption_text.question_prompt`).
            num_beams: Beam width (1: greedy).
            max_new_tokens: Most tokens generated per item, ``<eos>`` included.

        Returns:
            ``B`` strings.
        """
        check_images(images, "images", allow_empty=False)
        if not isinstance(num_beams, int) or num_beams < 1:
            raise InputError(f"num_beams={num_beams!r} must be an int >= 1")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InputError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        p = self._prompt_ids(prompt)
        if len(p) + max_new_tokens > self.decoder.max_len + 1:
            max_new_tokens = self.decoder.max_len + 1 - len(p)
        feats = self.image_features(images)
        mem_kv = self.decoder.memory(feats)
        b = len(images)
        caches: list[dict[str, torch.Tensor]] = [{} for _ in self.decoder.blocks]
        ids = torch.tensor([p] * b, device=self.device)  # (B, P)
        logp = step_logp(self.decoder(ids, mem_kv, caches, 0)[:, -1])  # (B, V)
        if num_beams == 1:
            seqs = greedy_decode(self.decoder, logp, mem_kv, caches, len(p), max_new_tokens)
        else:
            seqs = beam_decode(self.decoder, logp, mem_kv, caches, len(p), max_new_tokens, num_beams)
        return [self.vocab.decode(s) for s in seqs]

    def __repr__(self) -> str:
        d = self.config["decoder"]
        return (f"ToyCaptioner(name={self.name!r}, tower={self.config['tower']['spec']!r}, "
                f"decoder={d['layers']}x{d['width']}, vocab={len(self.vocab)})")


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def list_captioners() -> list[str]:
    """Names of the shipped captioners (folders of :data:`CAPTIONER_ROOT` with weights and config)."""
    if not CAPTIONER_ROOT.is_dir():
        return []
    return sorted(p.name for p in CAPTIONER_ROOT.iterdir() if p.is_dir() and all((p / f).is_file() for f in _FILES))


def _tower_dir(config: dict[str, Any]) -> Path:
    from . import checkpoint_dir

    return checkpoint_dir(config["tower"]["name"])


def load_captioner_dir(folder: str | Path, device: str | torch.device = "cpu", tower_dir: str | Path | None = None,
                       name: str | None = None) -> ToyCaptioner:
    """Load a captioner folder (``model.safetensors``, ``config.json``, optional ``training.json``).

    Args:
        folder: The captioner folder.
        device: Where to put the model.
        tower_dir: The open_clip folder of the image tower (default: the shipped toy checkpoint
            named in ``config.json``).
        name: Name in the spec (default: the folder's name).

    Raises:
        WeightsNotFoundError: A file is missing, or the tower's weights file does not have the
            SHA-256 recorded in ``config.json`` (the decoder was trained on another tower).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise WeightsNotFoundError(f"captioner folder {str(folder)!r} lacks {', '.join(missing)}")
    config = json.loads((folder / "config.json").read_text())
    tdir = Path(tower_dir) if tower_dir is not None else _tower_dir(config)
    tfile = tdir / config["tower"]["file"]
    if not tfile.is_file():
        raise WeightsNotFoundError(f"image tower weights {str(tfile)!r} not found (tower {config['tower']['spec']!r})")
    digest = file_sha256(tfile)
    if digest != config["tower"]["sha256"]:
        raise WeightsNotFoundError(
            f"image tower {str(tfile)!r} has SHA-256 {digest[:16]}…, but the captioner in {str(folder)!r} was trained "
            f"on {config['tower']['spec']!r} with SHA-256 {config['tower']['sha256'][:16]}…; retrain the captioner "
            "(python -m vlmkit.toyworld.caption_train) or restore that checkpoint"
        )
    model = ToyCaptioner(load_tower(tdir, device), config, name or folder.name)
    state = load_file(str(folder / "model.safetensors"))
    own = model.trainable_state()
    if set(state) != set(own):
        raise WeightsNotFoundError(
            f"{str(folder / 'model.safetensors')!r} does not fit its config.json (missing "
            f"{sorted(set(own) - set(state))[:3]}, unexpected {sorted(set(state) - set(own))[:3]})"
        )
    model.decoder.load_state_dict({k[8:]: v.float() for k, v in state.items() if k.startswith("decoder.")})
    model.image.load_state_dict({k[6:]: v.float() for k, v in state.items() if k.startswith("image.")})
    record = folder / "training.json"
    if record.is_file():
        model.meta["training"] = json.loads(record.read_text())
    return model.to(device).eval().requires_grad_(False)


def check_captioner(name: str) -> str:
    """The shipped captioner's bare name for ``name`` (``"rn"``) or its spec (``"toycap:rn"``), without loading
    it: the one check the loaders and the grid's spec check share.

    Raises:
        ModelSpecError: No shipped captioner has that name (the message lists them, with near matches).
    """
    rest = name.strip().split(":", 1)[1] if name.strip().startswith(SPEC_PREFIX + ":") else name.strip()
    names = list_captioners()
    if rest not in names:
        raise ModelSpecError(
            f"unknown toy captioner {name!r}; shipped captioners: "
            f"{', '.join(f'{SPEC_PREFIX}:{n}' for n in names) or '(none)'}.{did_you_mean(rest, names)}"
        )
    return rest


def load_toy_captioner(name: str = "rn", device: str | torch.device = "cpu") -> ToyCaptioner:
    """Load a shipped captioner by name (``"rn"``) or spec (``"toycap:rn"``).

    Raises:
        ModelSpecError: No shipped captioner has that name (the message lists them).
        WeightsNotFoundError: The tower checkpoint is missing or not the one it was trained on.
    """
    rest = check_captioner(name)
    return load_captioner_dir(CAPTIONER_ROOT / rest, device, name=rest)



__all__ = [
    "CAPTIONER_ROOT",
    "SPEC_PREFIX",
    "ToyCaptioner",
    "check_captioner",
    "list_captioners",
    "load_captioner_dir",
    "load_toy_captioner",
]
