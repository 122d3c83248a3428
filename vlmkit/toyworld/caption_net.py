"""Network parts of the toy captioner (``toycap:``): the text decoder and the image side.

* decoder: :class:`CaptionDecoder`, a pre-norm causal transformer whose blocks attend to the image
  tokens (self-attention, cross-attention, MLP; tied input/output embeddings);
* decoding with its key/value caches: :func:`greedy_decode`, :func:`beam_decode` (what
  :meth:`vlmkit.toyworld.captioning.ToyCaptioner.generate` runs) and :func:`step_logp`;
* image side: :func:`load_tower` (the frozen image tower of a toy open_clip checkpoint),
  :func:`tower_kind`, :func:`frozen_tokens` (the output of the tower's frozen part) and
  :class:`ImageHead` (the captioner's fine-tuned copy of the tower's last stages, giving the image
  tokens); :func:`file_sha256` checks the tower checkpoint a captioner was trained on.

The captioner that wires them together is :class:`vlmkit.toyworld.captioning.ToyCaptioner`. Attribute
names of these modules are the keys of the shipped state dicts: do not rename them.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .caption_text import BOS, EOS, PAD, UNK

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


class CaptionDecoder(nn.Module):
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
    """Select the batch rows ``idx`` of the decoder's state, for beam search.

    Args:
        mem_kv: Per-block cross-attention keys/values of the image tokens (:meth:`CaptionDecoder.memory`).
        caches: Per-block self-attention caches (``"k"``, ``"v"``); reordered in place.
        idx: ``(R,)`` long, the rows to keep (repeats allowed).

    Returns:
        ``mem_kv`` with its rows selected.
    """
    for c in caches:
        for key in ("k", "v"):
            c[key] = c[key].index_select(0, idx)
    return [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in mem_kv]


# ----------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------


def step_logp(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(B, V)`` of next-token logits, with ``<pad>``, ``<bos>`` and ``<unk>`` at ``-inf``."""
    logp = logits.float().log_softmax(-1)
    logp[:, [PAD, BOS, UNK]] = float("-inf")  # never emitted (scores stay true log-probabilities)
    return logp


def greedy_decode(decoder: CaptionDecoder, logp: torch.Tensor, mem_kv: list, caches: list, pos: int, max_new: int
                  ) -> list[list[int]]:
    """Greedy decoding: the token ids of each item, ``<eos>`` included when emitted.

    Args:
        decoder: The decoder.
        logp: ``(B, V)`` log-probabilities of the first new token (:func:`step_logp`).
        mem_kv: Per-block image keys/values (:meth:`CaptionDecoder.memory`).
        caches: Per-block self-attention caches, filled by the prompt.
        pos: Position of the first new token (the prompt length).
        max_new: Most tokens generated per item.
    """
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
        logp = step_logp(decoder(nxt[:, None], mem_kv, caches, pos + step)[:, -1])
    return out


def beam_decode(decoder: CaptionDecoder, logp: torch.Tensor, mem_kv: list, caches: list, pos: int, max_new: int,
                k: int) -> list[list[int]]:
    """Beam search of width ``k`` (see :meth:`vlmkit.toyworld.captioning.ToyCaptioner.generate`): the best
    sequence of each item. Arguments as in :func:`greedy_decode`; ``caches`` are reordered in place.
    """
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
        logits = decoder(new_tok.view(-1, 1), mem_kv, caches, pos + step)[:, -1]
        logp = step_logp(logits)  # (B * k, V)
    result = []
    for i in range(b):
        pool = list(finished[i])
        if not pool:  # nothing ended within max_new_tokens: the best live sequence
            pool = [(float(scores[i, j]), seqs[i][j]) for j in range(scores.shape[1])]
        result.append(max(pool, key=lambda f: f[0])[1])
    return result



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


class ImageHead(nn.Module):
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

    def train(self, mode: bool = True) -> ImageHead:
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



__all__ = [
    "CaptionDecoder",
    "ImageHead",
    "beam_decode",
    "file_sha256",
    "frozen_tokens",
    "greedy_decode",
    "load_tower",
    "step_logp",
    "tower_kind",
]
