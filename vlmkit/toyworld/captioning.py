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
* text side: a word-level :class:`Vocabulary` over the caption grammar plus ``<pad> <bos> <eos>
  <unk>`` and the prompt/question words, and a pre-norm causal transformer decoder whose blocks
  attend to the image tokens (self-attention, cross-attention, MLP);
* a prompt selects the task: ``"describe:"`` asks for the caption :func:`target_caption` (every
  visible object with size, colour, shape and position in a fixed reading order, and the sign), ``"question: is there a red star ? answer:"`` asks for ``yes`` / ``no``.

Loading: ``load_toy_captioner("rn")`` (or the spec ``"toycap:rn"``). Training:
``python -m vlmkit.toyworld.captioning --config vlmkit/toyworld/configs/toycap_rn.json --out
vlmkit/toyworld/captioner/rn``. Held-out quality: :func:`evaluate_captioner` (CHAIR-i, CHAIR-s,
object recall, yes/no accuracy).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelSpecError, WeightsNotFoundError, did_you_mean
from ..schedules import apply_lr_factor, warmup_cosine
from ..validate import check_images
from .evaluate import EVAL_SEED, RESERVED_SEEDS
from .grammar import (
    BACKGROUND_WORDS,
    POSITION_PHRASES,
    SIZE_WORDS,
    article,
    join_phrases,
    object_phrase,
    visible_objects,
)
from .train import MEAN, STD
from .world import (
    COLOR_NAMES,
    OTHER_WORDS,
    SHAPES,
    Scene,
    render_spec,
    sample_spec,
    scene_rng,
)

#: Folder of the shipped captioners (one sub-folder per name).
CAPTIONER_ROOT: Path = Path(__file__).resolve().parent / "captioner"
#: Spec prefix of the captioners (``toycap:rn``).
SPEC_PREFIX: str = "toycap"
#: The captioning prompt.
DESCRIBE_PROMPT: str = "describe:"
#: How a question becomes a prompt.
QUESTION_FORMAT: str = "question: {question} answer:"
#: Yes/no question templates the captioner was trained on (``{a}`` is the article of what follows).
QUESTION_TEMPLATES: dict[str, str] = {
    "shape": "is there {a} {shape} ?",
    "color": "is there {a} {color} object ?",
    "color_shape": "is there {a} {color} {shape} ?",
    "sign": "is there a sign ?",
}
#: Order in which :func:`target_caption` lists objects (positions are unique within a scene).
POSITION_ORDER: tuple[str, ...] = ("top", "left", "center", "right", "bottom")
#: Special tokens, in id order.
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3

_FILES = ("model.safetensors", "config.json")
_TOKEN_RE = re.compile(r'[",?.]|[^\s",?.]+')
# sub-streams of the evaluation seed used here (evaluate.py uses 0, 2, 3, 4)
_STREAM_SCENES, _STREAM_QUESTIONS = 11, 12
_QUESTION_KINDS: tuple[str, ...] = ("shape", "color", "color_shape", "sign")
_QUESTION_P: tuple[float, ...] = (0.4, 0.2, 0.3, 0.1)


# ----------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-case word tokens; ``" , ? .`` are tokens of their own."""
    return _TOKEN_RE.findall(text.lower())


def default_words() -> list[str]:
    """The word list of a new :class:`Vocabulary`: the grammar's words, prompt words and answers.

    Built from the world's and the grammar's vocabularies (shapes, colours, sign words, size words,
    position phrases, background words, caption templates), so any caption of the grammar encodes
    without ``<unk>``; the list is stored in each captioner's ``config.json`` and read back from there.
    """
    from .grammar import (
        SCENE_TEMPLATES,
        SHORT_TEMPLATES,
        SIGN_TEMPLATES,
        SUBJECT_TEMPLATES,
        TRANSCRIBE_TEMPLATES,
    )

    words: list[str] = []
    sources: list[str] = [*SHAPES, *COLOR_NAMES, *OTHER_WORDS]
    sources += [w for ws in SIZE_WORDS.values() for w in ws]
    sources += [p for ps in POSITION_PHRASES.values() for p in ps]
    sources += list(BACKGROUND_WORDS.values())
    for t in (*SCENE_TEMPLATES, *SHORT_TEMPLATES, *SIGN_TEMPLATES, *SUBJECT_TEMPLATES, *TRANSCRIBE_TEMPLATES):
        sources.append(re.sub(r"\{[^}]*\}", " ", t))
    sources += ["a an background blank sign label , . \" ?", DESCRIBE_PROMPT, QUESTION_FORMAT.format(question="")]
    sources += [t.replace("{a}", "a an").replace("{shape}", "").replace("{color}", "") for t in QUESTION_TEMPLATES.values()]
    sources += ["yes no any does the say"]
    for s in sources:
        for w in tokenize(s):
            if w not in words:
                words.append(w)
    return words


class Vocabulary:
    """Word-level vocabulary: ``encode`` / ``decode`` between grammar text and token ids.

    Attributes:
        tokens: Id → token; the first four are :data:`SPECIALS`.
    """

    def __init__(self, words: Sequence[str]) -> None:
        words = [w for w in words if w not in SPECIALS]
        self.tokens: list[str] = [*SPECIALS, *dict.fromkeys(words)]
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (unknown words → ``<unk>``; no ``<bos>`` / ``<eos>``)."""
        return [self.index.get(t, UNK) for t in tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (stops at ``<eos>``, skips other specials); inverse of :meth:`encode` on grammar text.

        Commas, question marks and full stops attach to the word before; a pair of ``"`` wraps the
        words between them (``says "star"``).
        """
        out: list[str] = []
        glue_next, quote_open = True, False
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i < len(SPECIALS):
                continue
            tok = self.tokens[i]
            if tok in (",", "?", "."):
                out.append(tok)
                glue_next = False
            elif tok == '"':
                if quote_open:
                    out.append('"')
                    glue_next = False
                else:
                    out.append('"' if glue_next else ' "')
                    glue_next = True
                quote_open = not quote_open
            else:
                out.append(tok if glue_next else " " + tok)
                glue_next = False
        return "".join(out)


# ----------------------------------------------------------------------------------------------------
# Targets from ground truth
# ----------------------------------------------------------------------------------------------------


def target_caption(scene: Scene) -> str:
    """The caption the captioner is trained to produce: the objects and the sign, as the grammar says them.

    Every visible object (:func:`~vlmkit.toyworld.grammar.visible_objects`, at least 35% of its pixels
    shown) with size, colour, shape and position (:func:`~vlmkit.toyworld.grammar.object_phrase`),
    listed in :data:`POSITION_ORDER` (top, left, centre, right, bottom) — drawing order, which
    :func:`~vlmkit.toyworld.grammar.describe` uses, is not visible in the image — then the sign
    (transcribed, or ``a blank sign``), e.g. ``'a photo of a large red star on the left and a small
    blue ring at the bottom, and a sign that says "cat"'``. The background is left out: the shipped
    tower's features do not tell backgrounds apart (a linear probe of its pooled features is near
    chance), and no metric here scores it.
    """
    objs = sorted(visible_objects(scene), key=lambda o: POSITION_ORDER.index(o.position))
    sign = scene.sign
    if not objs:
        if sign is None:
            return "a photo"
        return f'a photo of a sign that says "{sign.word}"' if sign.word else "a photo of a blank sign"
    text = f"a photo of {join_phrases([object_phrase(o) for o in objs])}"
    if sign is not None:
        text += f', and a sign that says "{sign.word}"' if sign.word else ", and a blank sign"
    return text


def sample_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A yes/no question about ``scene`` and its ground-truth answer (about half ``yes``).

    ``yes`` questions name an attribute of a visible object; ``no`` questions name a shape, colour
    or colour-shape pair that no object in the scene has (occluded ones included), so every answer is
    unambiguous. The kinds (:data:`QUESTION_TEMPLATES`) are drawn with probabilities 0.4 (shape), 0.2
    (colour), 0.3 (colour and shape), 0.1 (sign present).

    Returns:
        ``(question, "yes" | "no")``, the question without the prompt around it.
    """
    return _question_from_facts(_scene_facts(scene), rng)


_Facts = tuple[list[tuple[str, str]], set[tuple[str, str]], bool]


def _scene_facts(scene: Scene) -> _Facts:
    """``(visible (colour, shape) pairs, all drawn pairs, has a sign)``: what questions are about."""
    return [(o.color, o.shape) for o in visible_objects(scene)], {(o.color, o.shape) for o in scene.objects}, \
        scene.sign is not None


def _question_from_facts(facts: _Facts, rng: np.random.Generator) -> tuple[str, str]:
    vis, present, has_sign = facts
    kind = _QUESTION_KINDS[int(rng.choice(len(_QUESTION_KINDS), p=_QUESTION_P))]
    if kind == "sign":
        return QUESTION_TEMPLATES["sign"], "yes" if has_sign else "no"
    want_yes = bool(vis) and rng.random() < 0.5
    if want_yes:
        color, shape = vis[int(rng.integers(len(vis)))]
    elif kind == "shape":
        options = [s for s in SHAPES if s not in {p[1] for p in present}]
        color, shape = "", options[int(rng.integers(len(options)))]
    elif kind == "color":
        options = [c for c in COLOR_NAMES if c not in {p[0] for p in present}]
        color, shape = options[int(rng.integers(len(options)))], ""
    else:
        while True:
            color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            if (color, shape) not in present:
                break
    first = shape if kind == "shape" else color
    return QUESTION_TEMPLATES[kind].format(a=article(first), shape=shape, color=color), "yes" if want_yes else "no"


def question_prompt(question: str) -> str:
    """The prompt of a question: :data:`QUESTION_FORMAT` unless ``question`` already is a prompt."""
    q = question.strip()
    if q.lower().startswith(("question:", DESCRIBE_PROMPT)):
        return q
    return QUESTION_FORMAT.format(question=q)


# ----------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, h, d // h).transpose(1, 2)  # (B, h, T, d/h)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, D)


class _Block(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the image, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.cq, self.ckv, self.cproj = nn.Linear(width, width), nn.Linear(width, 2 * width), nn.Linear(width, width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def memory_kv(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of the image tokens ``(B, M, D)`` → two ``(B, h, M, D/h)``."""
        k, v = self.ckv(mem).chunk(2, dim=-1)
        return _heads(k, self.heads), _heads(v, self.heads)

    def forward(
        self, x: torch.Tensor, mem_kv: tuple[torch.Tensor, torch.Tensor], cache: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))  # (B, h, T, d)
        causal = True
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                causal = x.shape[1] > 1
                if causal:
                    raise InputError("cached decoding feeds one token at a time after the prompt")
            cache["k"], cache["v"] = k, v
        x = x + self.proj(_merge(F.scaled_dot_product_attention(q, k, v, is_causal=causal and x.shape[1] > 1)))
        cq = _heads(self.cq(self.ln2(x)), self.heads)
        x = x + self.cproj(_merge(F.scaled_dot_product_attention(cq, *mem_kv)))
        return x + self.mlp(self.ln3(x))


def _grid_code(n_tokens: int, width: int) -> torch.Tensor:
    """``(n_tokens, width)`` 2-D sin-cos position code of a square patch grid after one prefix token.

    Half the channels encode the row, half the column, at geometric frequencies (Vaswani et al. 2017;
    the 2-D variant of MAE, He et al. 2022); rows that are not grid cells stay zero.
    """
    code = torch.zeros(n_tokens, width)
    side = math.isqrt(n_tokens - 1)
    if side * side != n_tokens - 1 or width % 4:
        return code
    q = width // 4
    freq = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / q))  # (q,)
    ys, xs = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * freq[None] * (math.pi / side)  # (N, q)
        parts += [ang.sin(), ang.cos()]
    code[1:] = torch.cat(parts, 1)
    return code


class _Decoder(nn.Module):
    """Image-token projection + causal transformer decoder with tied input/output embeddings."""

    def __init__(self, vocab_size: int, feat_dim: int, n_mem: int, width: int, layers: int, heads: int,
                 mlp_ratio: float, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.feat_proj = nn.Linear(feat_dim, width)
        self.mem_pos = nn.Parameter(torch.zeros(n_mem, width))
        self.mem_ln = nn.LayerNorm(width)
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.01)
        with torch.no_grad():  # start from a 2-D sin-cos code of the patch grid (class token: zeros)
            self.mem_pos.copy_(_grid_code(n_mem, width))

    def memory(self, feats: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-block cross-attention keys/values of image features ``(B, M, C)``."""
        mem = self.mem_ln(self.feat_proj(feats) + self.mem_pos)  # (B, M, D)
        return [b.memory_kv(mem) for b in self.blocks]

    def forward(
        self,
        ids: torch.Tensor,
        mem_kv: list[tuple[torch.Tensor, torch.Tensor]],
        caches: list[dict[str, torch.Tensor]] | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        """Logits ``(B, T, V)`` of token ids ``(B, T)`` at positions ``start ... start + T - 1``."""
        t = ids.shape[1]
        if start + t > self.max_len:
            raise InputError(f"sequence of {start + t} tokens exceeds the decoder's max_len={self.max_len}")
        x = self.tok(ids) + self.pos[start : start + t]  # (B, T, D)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mem_kv[i], None if caches is None else caches[i])
        return self.ln_f(x) @ self.tok.weight.T  # (B, T, V)


def _reorder(mem_kv: list[tuple[torch.Tensor, torch.Tensor]], caches: list[dict[str, torch.Tensor]], idx: torch.Tensor
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    for c in caches:
        for key in ("k", "v"):
            c[key] = c[key].index_select(0, idx)
    return [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in mem_kv]


# ----------------------------------------------------------------------------------------------------
# Image tower
# ----------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tower(tower_dir: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen visual tower of a toy open_clip checkpoint folder (eval mode, float32).

    Loaded through open_clip's ``local-dir:`` path exactly as :func:`vlmkit.toyworld.evaluate.open_clip_encoders`.
    """
    import open_clip

    clip, _, _ = open_clip.create_model_and_transforms("local-dir:" + str(Path(tower_dir).resolve()), device=device)
    tower = clip.visual.eval().requires_grad_(False)
    return tower


def tower_kind(tower: nn.Module) -> str:
    """``"vit"`` for an open_clip ``VisionTransformer``, ``"rn"`` for a ``ModifiedResNet``."""
    if hasattr(tower, "transformer") and hasattr(tower, "ln_post"):
        return "vit"
    if all(hasattr(tower, f"layer{i}") for i in range(1, 5)) and hasattr(tower, "stem"):
        return "rn"
    raise InputError(f"unsupported image tower {type(tower).__name__}: expected open_clip's VisionTransformer or ModifiedResNet")


def _max_train_blocks(tower: nn.Module) -> int:
    return len(tower.transformer.resblocks) if tower_kind(tower) == "vit" else 2


def frozen_tokens(tower: nn.Module, x: torch.Tensor, train_blocks: int) -> torch.Tensor:
    """Output of the frozen part of the tower: the input of the part the captioner fine-tunes.

    Args:
        tower: An open_clip ``VisionTransformer`` (batch-first) or ``ModifiedResNet``.
        x: Normalised images ``(B, 3, S, S)``.
        train_blocks: ViT: how many of its last blocks the captioner owns (0 to all). ResNet: 1 (its
            ``layer3``) or 2 (``layer2`` and ``layer3``).

    Returns:
        ViT: ``(B, 1 + N, C)`` residual-stream tokens (class token first, before ``ln_post``).
        ResNet: the ``(B, C, H, W)`` feature map after ``layer1`` (``train_blocks=2``) or ``layer2`` (1).
    """
    if tower_kind(tower) == "rn":
        h = tower.layer1(tower.stem(x))  # (B, C1, S/4, S/4)
        return h if train_blocks >= 2 else tower.layer2(h)
    n_blocks = len(tower.transformer.resblocks)
    if train_blocks >= n_blocks:  # the patch embedding only (open_clip's VisionTransformer._embeds, eval mode)
        x = tower.conv1(x)  # (B, C, g, g)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, N, C)
        cls = tower.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        return tower.ln_pre(torch.cat([cls, x], 1) + tower.positional_embedding.to(x.dtype))
    out = tower.forward_intermediates(x, indices=[n_blocks - train_blocks - 1], stop_early=True,
                                      intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
    return torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], 1)  # (B, 1 + N, C)


class _ImageHead(nn.Module):
    """The captioner's fine-tuned copy of the end of the tower, producing the image tokens.

    ViT: copies of the last ``train_blocks`` blocks and ``ln_post``; tokens = class token + patch
    tokens. ResNet: copies of ``layer3`` (and ``layer2`` when ``train_blocks == 2``), batch norms kept
    in eval mode; tokens = the ``layer2`` map concatenated with the 2×-upsampled ``layer3`` map, one
    token per ``layer2`` cell, after a mean token, through a new ``LayerNorm``.
    """

    def __init__(self, tower: nn.Module, train_blocks: int) -> None:
        super().__init__()
        self.kind = tower_kind(tower)
        top = _max_train_blocks(tower)
        low = 1 if self.kind == "rn" else 0
        if not low <= train_blocks <= top:
            raise InputError(f"train_blocks={train_blocks} must be in [{low}, {top}] for this {self.kind} tower")
        self.train_blocks = train_blocks
        if self.kind == "vit":
            if not getattr(tower.transformer, "batch_first", True):
                raise InputError("the tower's transformer must be batch-first (open_clip >= 2.24)")
            blocks = tower.transformer.resblocks
            self.blocks = nn.ModuleList(copy.deepcopy(b) for b in blocks[len(blocks) - train_blocks:])
            self.ln = copy.deepcopy(tower.ln_post)
        else:
            stages = [tower.layer2, tower.layer3][2 - train_blocks:]
            self.blocks = nn.ModuleList(copy.deepcopy(st) for st in stages)
            c2 = tower.layer2[-1].conv3.out_channels
            c3 = tower.layer3[-1].conv3.out_channels
            self.ln = nn.LayerNorm(c2 + c3)
        self.requires_grad_(True)

    def train(self, mode: bool = True) -> _ImageHead:
        """Switch mode; batch norms (ResNet) stay in eval mode, with the tower's statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vit":
            for blk in self.blocks:
                x = blk(x)
            return self.ln(x)  # (B, 1 + N, C)
        h2 = self.blocks[0](x) if self.train_blocks == 2 else x  # (B, C2, g, g)
        h3 = self.blocks[-1](h2)  # (B, C3, g/2, g/2)
        up = F.interpolate(h3, size=h2.shape[-2:], mode="nearest")  # (B, C3, g, g)
        t = torch.cat([h2, up], 1).flatten(2).transpose(1, 2)  # (B, g*g, C2 + C3)
        return self.ln(torch.cat([t.mean(1, keepdim=True), t], 1))  # (B, 1 + g*g, C2 + C3)


# ----------------------------------------------------------------------------------------------------
# The captioner
# ----------------------------------------------------------------------------------------------------


class ToyCaptioner(nn.Module):
    """A captioner and yes/no answerer on the toy world (toy CLIP tower with fine-tuned last stages + small decoder).

    Attributes:
        name: The spec it answers to, e.g. ``"toycap:rn"``.
        spec: Same as ``name``.
        image_size: ``(H, W)`` of the tower's input; other sizes are resized (bicubic) inside.
        vocab: The :class:`Vocabulary`.
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
        self.image = _ImageHead(tower, self.train_blocks)
        d = config["decoder"]
        self.decoder = _Decoder(len(self.vocab), int(config["feat_dim"]), int(config["n_tokens"]), d["width"],
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

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)  # (B, 3, H, W) in [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens the decoder attends to, ``(B, 1 + N, C)``, of float images in [0, 1] (differentiable)."""
        return self.image(frozen_tokens(self.tower, self._pixels(images), self.train_blocks))

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
            prompt: Task prompt (``None``: :data:`DESCRIBE_PROMPT`; a question is wrapped by :func:`question_prompt`).
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

        The prompt is :func:`question_prompt` of the question; an option's score is
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
            prompt: ``None`` (caption) or a question / prompt (see :func:`question_prompt`).
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
        logp = self._step_logp(self.decoder(ids, mem_kv, caches, 0)[:, -1])  # (B, V)
        if num_beams == 1:
            seqs = self._greedy(logp, mem_kv, caches, len(p), max_new_tokens)
        else:
            seqs = self._beam(logp, mem_kv, caches, len(p), max_new_tokens, num_beams)
        return [self.vocab.decode(s) for s in seqs]

    def _step_logp(self, logits: torch.Tensor) -> torch.Tensor:
        logp = logits.float().log_softmax(-1)
        logp[:, [PAD, BOS, UNK]] = float("-inf")  # never emitted (scores stay true log-probabilities)
        return logp

    def _greedy(self, logp: torch.Tensor, mem_kv: list, caches: list, pos: int, max_new: int) -> list[list[int]]:
        b = logp.shape[0]
        out = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=logp.device)
        for step in range(max_new):
            nxt = logp.argmax(-1)  # (B,)
            for i in range(b):
                if not done[i]:
                    out[i].append(int(nxt[i]))
            done |= nxt == EOS
            if bool(done.all()) or step == max_new - 1:
                break
            logp = self._step_logp(self.decoder(nxt[:, None], mem_kv, caches, pos + step)[:, -1])
        return out

    def _beam(self, logp: torch.Tensor, mem_kv: list, caches: list, pos: int, max_new: int, k: int
              ) -> list[list[int]]:
        b, v = logp.shape
        dev = logp.device
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        # live beams: (B, k) scores and token lists; start from the prompt's single state per item
        scores = logp.new_zeros(b, 1)
        seqs: list[list[list[int]]] = [[[]] for _ in range(b)]
        active = [True] * b
        for step in range(max_new):
            n_live = scores.shape[1]
            cand = (scores[:, :, None] + logp.view(b, n_live, v)).view(b, -1)  # (B, n_live * V)
            top_s, top_i = cand.topk(min(2 * k, cand.shape[1]), dim=1)  # (B, 2k)
            new_scores = torch.full((b, k), float("-inf"), device=dev)
            new_src = torch.zeros((b, k), dtype=torch.long, device=dev)
            new_tok = torch.full((b, k), EOS, dtype=torch.long, device=dev)
            new_seqs: list[list[list[int]]] = []
            for i in range(b):
                row: list[list[int]] = []
                if active[i]:
                    for s, flat in zip(top_s[i].tolist(), top_i[i].tolist()):
                        if s == float("-inf"):
                            break
                        src, tok = divmod(flat, v)
                        if tok == EOS:
                            finished[i].append((s, seqs[i][src] + [EOS]))
                        elif len(row) < k:
                            new_scores[i, len(row)], new_src[i, len(row)], new_tok[i, len(row)] = s, src, tok
                            row.append(seqs[i][src] + [tok])
                        if len(row) == k:
                            break
                    best_fin = max((f[0] for f in finished[i]), default=float("-inf"))
                    if not row or best_fin >= float(new_scores[i, 0]):
                        active[i] = False
                row += [[EOS]] * (k - len(row))  # placeholders of inactive slots (score -inf)
                new_seqs.append(row)
            if not any(active) or step == max_new - 1:
                seqs = new_seqs
                scores = new_scores
                break
            src_rows = (torch.arange(b, device=dev)[:, None] * n_live + new_src).view(-1)  # (B * k,)
            mem_kv = _reorder(mem_kv, caches, src_rows)
            scores, seqs = new_scores, new_seqs
            logits = self.decoder(new_tok.view(-1, 1), mem_kv, caches, pos + step)[:, -1]
            logp = self._step_logp(logits)  # (B * k, V)
        result = []
        for i in range(b):
            pool = list(finished[i])
            if not pool:  # nothing ended within max_new_tokens: the best live sequence
                pool = [(float(scores[i, j]), seqs[i][j]) for j in range(scores.shape[1])]
            result.append(max(pool, key=lambda f: f[0])[1])
        return result

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
            "(python -m vlmkit.toyworld.captioning) or restore that checkpoint"
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


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


def mentioned_shapes(caption: str) -> set[str]:
    """Shape words a caption mentions as objects; quoted text (a transcribed sign) is not a mention."""
    return set(re.findall(r"[a-z]+", re.sub(r'"[^"]*"', " ", caption.lower()))) & set(SHAPES)


def caption_scenes(n: int, seed: int = EVAL_SEED) -> list[Scene]:
    """``n`` held-out scenes of the default world mixture (sub-stream 11 of ``seed``)."""
    return [render_spec(sample_spec(scene_rng(seed, i, _STREAM_SCENES))) for i in range(n)]


def _stack(scenes: Sequence[Scene]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float().div_(255.0)


def hallucination_counts(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """CHAIR-i, CHAIR-s and object recall over the shape vocabulary.

    CHAIR (Rohrbach et al., "Object Hallucination in Image Captioning", EMNLP 2018): a mentioned
    shape (:func:`mentioned_shapes`, unique per caption) is hallucinated when no object of that shape
    is drawn with any pixel showing; CHAIR-i = hallucinated mentions / all mentions, CHAIR-s = share
    of captions with at least one hallucination. Object recall = ground-truth shapes mentioned / all
    ground-truth shapes, where ground truth is the set of shapes of the visible objects
    (:func:`~vlmkit.toyworld.grammar.visible_objects`, ≥ 35% of their pixels shown), pooled over scenes.
    """
    mentions = halluc = caps_h = gt_total = gt_hit = 0
    for cap, scene in zip(captions, scenes):
        said = mentioned_shapes(cap)
        drawn = {o.shape for o in scene.objects if o.visible.any()}
        gt = {o.shape for o in visible_objects(scene)}
        bad = said - drawn
        mentions += len(said)
        halluc += len(bad)
        caps_h += bool(bad)
        gt_total += len(gt)
        gt_hit += len(gt & said)
    return {
        "chair_i": halluc / mentions if mentions else 0.0,
        "chair_s": caps_h / len(captions) if len(captions) else 0.0,
        "object_recall": gt_hit / gt_total if gt_total else 1.0,
        "n_mentions": float(mentions),
        "n_gt_objects": float(gt_total),
    }


def evaluate_captioner(model: ToyCaptioner, n: int = 500, seed: int = EVAL_SEED, batch_size: int = 100,
                       num_beams: int = 1) -> dict[str, float]:
    """Held-out caption and yes/no quality on ``n`` scenes of ``seed``.

    Returns:
        ``chair_i``, ``chair_s``, ``object_recall`` (:func:`hallucination_counts`), ``exact_match``
        (share of captions equal to :func:`target_caption`), ``yesno_acc`` (one question per scene
        from :func:`sample_question`, answered by the larger :meth:`ToyCaptioner.option_logliks` of
        ``yes`` / ``no``), ``yes_rate`` (share of ground-truth ``yes``), ``n_scenes``,
        ``n_mentions``, ``n_gt_objects``.
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r} must be a positive int")
    scenes = caption_scenes(n, seed)
    qa = [sample_question(s, scene_rng(seed, i, _STREAM_QUESTIONS)) for i, s in enumerate(scenes)]
    captions: list[str] = []
    correct = 0
    for i in range(0, n, batch_size):
        x = _stack(scenes[i : i + batch_size])
        captions += model.generate(x, num_beams=num_beams)
        chunk = qa[i : i + batch_size]
        correct += sum(a == t for a, (_, t) in zip(model.answer(x, [q for q, _ in chunk]), chunk))
    out = hallucination_counts(captions, scenes)
    out["exact_match"] = float(np.mean([c == target_caption(s) for c, s in zip(captions, scenes)]))
    out["yesno_acc"] = correct / n
    out["yes_rate"] = float(np.mean([t == "yes" for _, t in qa]))
    out["n_scenes"] = float(n)
    return {k: round(float(v), 4) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------

#: Defaults of a training config (keys of ``configs/toycap_*.json``).
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "rn",
    "tower": "rn",
    "train_blocks": 2,
    "width": 128,
    "layers": 3,
    "heads": 4,
    "mlp_ratio": 4.0,
    "max_len": 64,
    "seed": 2718,
    "steps": 2200,
    "batch_size": 48,
    "question_weight": 2.0,
    "questions_per_image": 2,
    "aux_weight": 1.0,
    "lr": 2e-3,
    "image_lr_mult": 0.5,
    "weight_decay": 0.05,
    "warmup_frac": 0.05,
    "max_wall_s": None,
    "threads": 1,
    "eval_n": 500,
    "log_every": 50,
}


def _scene_batch(seed: int, start: int, n: int) -> tuple[torch.Tensor, list[Scene]]:
    """Scenes ``start ... start + n - 1`` of the training stream ``seed`` and their images ``(n, 3, H, W)`` in [0, 1]."""
    scenes = [render_spec(sample_spec(scene_rng(seed, i))) for i in range(start, start + n)]
    return _stack(scenes), scenes


def _patch_labels(scenes: Sequence[Scene], grid: int, min_cover: float = 0.3) -> torch.Tensor:
    """Ground truth of the auxiliary loss: per patch, the shape on top of it.

    A patch is labelled with the shape of the object covering the largest share of its pixels (visible
    pixels only) when that share is at least ``min_cover``, else "none" (index ``len(SHAPES)``).

    Returns:
        ``(B, grid * grid)`` long.
    """
    patch = np.full((len(scenes), grid * grid), len(SHAPES), dtype=np.int64)
    for b, scene in enumerate(scenes):
        best = np.full(grid * grid, min_cover - 1e-9)
        for o in scene.objects:
            h, w = o.visible.shape
            cov = o.visible.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3)).reshape(-1)
            take = cov > best
            patch[b, take] = SHAPES.index(o.shape)
            best[take] = cov[take]
    return torch.from_numpy(patch)


def _batch_ids(seqs: Sequence[list[int]], n_prompt: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, n_prompt)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, p : len(s)] = True
    return ids, mask


def _seq_loss(decoder: _Decoder, mem_kv: list, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = decoder(ids[:, :-1], mem_kv)  # (B, T-1, V)
    nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    m = mask[:, 1:].float()
    return (nll * m).sum() / m.sum()


def train_captioner(config: dict[str, Any], out: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a captioner on the toy world and write its folder.

    Recipe: ``steps`` AdamW steps; step ``t`` renders scenes ``t * batch_size ... (t + 1) * batch_size
    - 1`` of the stream ``seed`` (never an evaluation seed), runs the frozen part of the tower, then the
    captioner's own copies of its last ``train_blocks`` blocks and ``ln_post`` (initialised from
    the toy checkpoint, learning rate × ``image_lr_mult``), and trains on two sequences per scene: the caption
    (``<bos> describe: caption <eos>``, :func:`target_caption`) and one yes/no question (``<bos>
    question: ... answer: yes|no <eos>``, :func:`sample_question`). The loss is the token
    cross-entropy of the targets (prompt tokens excluded): caption + ``question_weight`` × question
    + ``aux_weight`` × the per-patch shape cross-entropy of a linear read-out of the image tokens
    (:func:`_patch_labels`; the read-out is not shipped). Learning rate: linear
    warm-up then cosine decay (:func:`vlmkit.schedules.warmup_cosine`); gradient norm clipped at 1.
    With ``max_wall_s`` set, progress is ``max(step / steps, elapsed / max_wall_s)`` as in
    :func:`vlmkit.toyworld.train.train`, so the run ends early on a slow machine (the steps done are
    recorded); without it the run is deterministic.

    Args:
        config: Keys of :data:`DEFAULT_CONFIG` (missing keys take the defaults).
        out: Folder to write (``model.safetensors``, ``config.json``, ``training.json``); ``None``: none.
        progress: Print progress lines.

    Returns:
        The training record (what ``training.json`` holds), with the model under ``"model"``.

    Raises:
        InputError: Unknown config keys, or a reserved seed.
    """
    import open_clip
    from safetensors.torch import save_file

    from . import checkpoint_dir

    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise InputError(f"config has unknown keys {sorted(unknown)}; expected some of {sorted(DEFAULT_CONFIG)}")
    cfg = {**DEFAULT_CONFIG, **config}
    if cfg["seed"] in RESERVED_SEEDS:
        raise InputError(f"seed={cfg['seed']} is reserved for held-out evaluation/export; pick another")

    def log(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))
    t_start = time.time()
    tdir = checkpoint_dir(cfg["tower"])
    tower = load_tower(tdir)
    vocab = Vocabulary(default_words())
    side = tower.image_size[0] if isinstance(tower.image_size, (tuple, list)) else tower.image_size
    with torch.no_grad():
        probe = _ImageHead(tower, int(cfg["train_blocks"])).eval()(frozen_tokens(tower, torch.zeros(1, 3, side, side),
                                                                                  int(cfg["train_blocks"])))
    n_tokens, feat_dim = int(probe.shape[1]), int(probe.shape[2])
    model_cfg = {
        "format": 1,
        "image_size": int(side),
        "tower": {"spec": f"toy:{cfg['tower']}", "name": cfg["tower"], "kind": tower_kind(tower),
                  "file": "open_clip_model.safetensors",
                  "sha256": file_sha256(tdir / "open_clip_model.safetensors")},
        "train_blocks": int(cfg["train_blocks"]),
        "feat_dim": feat_dim,
        "n_tokens": n_tokens,
        "decoder": {"width": cfg["width"], "layers": cfg["layers"], "heads": cfg["heads"],
                    "mlp_ratio": cfg["mlp_ratio"], "max_len": cfg["max_len"]},
        "prompts": {"describe": DESCRIBE_PROMPT, "question": QUESTION_FORMAT},
        "question_templates": QUESTION_TEMPLATES,
        "position_order": list(POSITION_ORDER),
        "vocab": vocab.tokens[len(SPECIALS):],
    }
    model = ToyCaptioner(tower, model_cfg, cfg["name"])
    dec, head = model.decoder, model.image
    grid = math.isqrt(n_tokens - 1)
    # training-only linear read-outs of the image tokens (dense auxiliary supervision; not shipped)
    aux = nn.Linear(feat_dim, len(SHAPES) + 1)  # per-patch shape read-out
    groups: list[dict[str, Any]] = []
    for mod, mult in ((dec, 1.0), (head, float(cfg["image_lr_mult"])), (aux, 1.0)):
        named = list(mod.named_parameters())
        wd = [p for n_, p in named if p.ndim >= 2 and "pos" not in n_ and "tok" not in n_]
        no_wd = [p for n_, p in named if not (p.ndim >= 2 and "pos" not in n_ and "tok" not in n_)]
        for ps, w in ((wd, cfg["weight_decay"]), (no_wd, 0.0)):
            if ps:
                groups.append({"params": ps, "weight_decay": w, "base_lr": cfg["lr"] * mult, "lr": cfg["lr"] * mult})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)
    params = [p for g in groups for p in g["params"]]
    describe_ids = [BOS, *vocab.encode(DESCRIBE_PROMPT)]
    bs, steps, every = int(cfg["batch_size"]), int(cfg["steps"]), int(cfg["log_every"])
    cap_losses: list[float] = []
    q_losses: list[float] = []
    aux_losses: list[float] = []
    model.train()
    t_setup = time.time() - t_start
    t0 = time.time()
    for step in range(steps):
        frac = step / steps
        if cfg["max_wall_s"] is not None:
            frac = max(frac, (time.time() - t0) / float(cfg["max_wall_s"]))
            if frac >= 1.0:
                log(f"stopping at step {step}: max_wall_s={cfg['max_wall_s']} spent")
                break
        apply_lr_factor(opt, warmup_cosine(frac, cfg["warmup_frac"], min_frac=1.0 / steps))
        x, scenes = _scene_batch(int(cfg["seed"]), step * bs, bs)
        with torch.no_grad():
            frozen = frozen_tokens(model.tower, model._pixels(x), model.train_blocks)  # (B, M, C)
        tokens = head(frozen)  # (B, 1 + N, C)
        mem_kv = dec.memory(tokens)
        targets = [vocab.encode(target_caption(s)) + [EOS] for s in scenes]
        ids, mask = _batch_ids([describe_ids + t for t in targets], [len(describe_ids)] * bs)
        loss_c = _seq_loss(dec, mem_kv, ids, mask)
        rng = np.random.default_rng([int(cfg["seed"]), 1, step])
        seqs, plen = [], []
        nq = int(cfg["questions_per_image"])
        for _ in range(nq):
            for s in scenes:
                q, a = sample_question(s, rng)
                p = [BOS, *vocab.encode(question_prompt(q))]
                seqs.append(p + vocab.encode(a) + [EOS])
                plen.append(len(p))
        q_mem = mem_kv if nq == 1 else [(k.repeat(nq, 1, 1, 1), v.repeat(nq, 1, 1, 1)) for k, v in mem_kv]
        loss_q = _seq_loss(dec, q_mem, *_batch_ids(seqs, plen))
        loss = loss_c + float(cfg["question_weight"]) * loss_q
        if float(cfg["aux_weight"]) > 0:
            patch_y = _patch_labels(scenes, grid)
            loss_a = F.cross_entropy(aux(tokens[:, 1:]).transpose(1, 2), patch_y)  # tokens[:, 1:]: (B, N, C)
            loss = loss + float(cfg["aux_weight"]) * loss_a
            aux_losses.append(loss_a.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        cap_losses.append(loss_c.item())
        q_losses.append(loss_q.item())
        if step % every == 0 or step == steps - 1:
            log(f"step {step} caption {np.mean(cap_losses[-every:]):.4f} question {np.mean(q_losses[-every:]):.4f} "
                f"aux {np.mean(aux_losses[-every:]) if aux_losses else 0.0:.4f} t {time.time() - t0:.0f}s")
    wall = time.time() - t0
    model.eval()
    t_eval = time.time()
    metrics = evaluate_captioner(model, n=int(cfg["eval_n"])) if cfg["eval_n"] else {}
    t_eval = time.time() - t_eval
    log(json.dumps(metrics))

    def curve(xs: list[float]) -> list[float]:
        return [round(float(np.mean(xs[i : i + 50])), 4) for i in range(0, len(xs), 50)]

    record: dict[str, Any] = {
        "name": cfg["name"],
        "spec": model.spec,
        "config": cfg,
        "steps": len(cap_losses),
        "steps_planned": steps,
        "train_seed": cfg["seed"],
        "scenes_seen": len(cap_losses) * bs,
        "sequences_seen": {"captions": len(cap_losses) * bs,
                           "questions": len(q_losses) * bs * int(cfg["questions_per_image"])},
        "wall_time_s": {"setup": round(t_setup, 1), "train": round(wall, 1), "eval": round(t_eval, 1),
                        "total": round(time.time() - t_start, 1)},
        "final_loss": {"caption": float(np.mean(cap_losses[-50:])), "question": float(np.mean(q_losses[-50:]))},
        "loss_curve_every_50": {"caption": curve(cap_losses), "question": curve(q_losses), "aux": curve(aux_losses)},
        "held_out_metrics": metrics,
        "held_out_seed": EVAL_SEED,
        "held_out_stream": _STREAM_SCENES,
        "weights_dtype": "float32",
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_file(model.trainable_state(), str(out / "model.safetensors"))
        (out / "config.json").write_text(json.dumps(model_cfg, indent=2))
        (out / "training.json").write_text(json.dumps(record, indent=2))
        log(f"wrote {out}")
    record["model"] = model
    return record


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vlmkit.toyworld.captioning --config CFG.json --out DIR [--steps N] [--eval-n N]``."""
    ap = argparse.ArgumentParser(description="Train the toy captioner (a decoder on a frozen toy-world tower).")
    ap.add_argument("--config", required=True, help="training config JSON (keys of DEFAULT_CONFIG)")
    ap.add_argument("--out", default=None, help="folder to write (model.safetensors, config.json, training.json)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-n", type=int, default=None, dest="eval_n")
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    for key in ("steps", "eval_n"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    rec = train_captioner(cfg, args.out)
    print(json.dumps({"wall_time_s": rec["wall_time_s"], **rec["held_out_metrics"]}, indent=2))


if __name__ == "__main__":
    main()


__all__ = [
    "CAPTIONER_ROOT",
    "DEFAULT_CONFIG",
    "DESCRIBE_PROMPT",
    "POSITION_ORDER",
    "QUESTION_FORMAT",
    "QUESTION_TEMPLATES",
    "SPEC_PREFIX",
    "ToyCaptioner",
    "Vocabulary",
    "caption_scenes",
    "default_words",
    "evaluate_captioner",
    "file_sha256",
    "frozen_tokens",
    "hallucination_counts",
    "list_captioners",
    "load_captioner_dir",
    "load_tower",
    "load_toy_captioner",
    "mentioned_shapes",
    "question_prompt",
    "sample_question",
    "target_caption",
    "tokenize",
    "tower_kind",
    "train_captioner",
]
