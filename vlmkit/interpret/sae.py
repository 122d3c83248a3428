"""Sparse autoencoders on image-tower activations: ReLU + L1 and TopK, with dead-latent resampling.

Model (both kinds; Bricken et al. 2023, "Towards Monosemanticity"; Gao et al. 2024, "Scaling and
evaluating sparse autoencoders")::

    x̃ = (x − μ) / s                       # centred and scaled so that E‖x̃‖² = d (s stored in the SAE)
    z = act(W_enc (x̃ − b_dec) + b_enc)     # (B, K) latents
    x̂̃ = W_dec z + b_dec                    # decoder columns kept at unit norm

* ``kind="relu"``: ``act = ReLU``, loss ``L = ‖x̃ − x̂̃‖² + λ‖z‖₁`` (the standard SAE objective; with
  unit-norm decoder columns the L1 penalty cannot be dodged by shrinking ``z``);
* ``kind="topk"``: ``act = ReLU ∘ TopK_k`` (keep the ``k`` largest pre-activations), loss ``‖x̃ − x̂̃‖²``
  (Gao et al. 2024, §2.3; sparsity is fixed by ``k``, no L1 term).

Dead latents (no activation for ``dead_after`` steps) are resampled every ``resample_every`` steps as
in Bricken et al. 2023: draw inputs with probability ∝ their squared reconstruction error, point the
dead decoder columns at those residuals, set the encoder rows to the same direction scaled to 0.2 ×
the mean alive encoder norm, zero their biases and their Adam moments.

Reported: reconstruction MSE (per element, in the original units), explained variance
``1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²``, L0 (mean number of active latents) and the dead fraction (latents
never active on the evaluation set).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vlmkit.errors import InputError
from vlmkit.interpret.store import ActivationStore

Data = torch.Tensor | np.ndarray | ActivationStore


@dataclass
class SAEConfig:
    """Training settings.

    Attributes:
        n_latents: Dictionary size ``K``.
        kind: ``"relu"`` (L1) or ``"topk"``.
        k: Active latents per input for ``"topk"``.
        l1: L1 coefficient λ for ``"relu"`` (on inputs scaled to ``E‖x̃‖² = d``).
        lr: Adam learning rate.
        steps: Optimisation steps.
        batch_size: Rows per step.
        resample_every: Check for dead latents every this many steps (0 disables resampling).
        dead_after: A latent is dead after this many steps without activating.
        seed: Seed of initialisation, batches and resampling.
        device: Where to train.
    """

    n_latents: int = 512
    kind: str = "topk"
    k: int = 16
    l1: float = 1e-3
    lr: float = 1e-3
    steps: int = 2000
    batch_size: int = 256
    resample_every: int = 250
    dead_after: int = 200
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in ("relu", "topk"):
            raise InputError(f"kind={self.kind!r}; expected 'relu' or 'topk'")
        if self.n_latents <= 0 or self.steps <= 0 or self.batch_size <= 0:
            raise InputError("n_latents, steps and batch_size must be positive")
        if self.kind == "topk" and not 0 < self.k <= self.n_latents:
            raise InputError(f"k={self.k} must lie in 1..n_latents={self.n_latents}")


class SparseAutoencoder(nn.Module):
    """A ReLU or TopK sparse autoencoder (see the module docstring).

    Args:
        d_in: Input dimension ``d``.
        n_latents: Dictionary size ``K``.
        kind: ``"relu"`` or ``"topk"``.
        k: Active latents for ``"topk"``.
    """

    def __init__(self, d_in: int, n_latents: int, kind: str = "topk", k: int = 16) -> None:
        super().__init__()
        self.kind, self.k = kind, int(k)
        self.W_enc = nn.Parameter(torch.empty(n_latents, d_in))
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.W_dec = nn.Parameter(torch.empty(d_in, n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("mu", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(()))
        nn.init.kaiming_uniform_(self.W_dec, a=math.sqrt(5))
        with torch.no_grad():
            self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True))
            self.W_enc.copy_(self.W_dec.T)  # tied initialisation (Gao et al. 2024, §2.2)

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[0])

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.scale

    def pre_activations(self, xn: torch.Tensor) -> torch.Tensor:
        return F.linear(xn - self.b_dec, self.W_enc, self.b_enc)  # (B, K)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return F.relu(pre)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, F.relu(top.values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, K)`` of raw inputs ``(B, d)``."""
        return self.activate(self.pre_activations(self.normalise_input(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the original units ``(B, d)``."""
        return (F.linear(z, self.W_dec) + self.b_dec) * self.scale + self.mu

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x̂, z)`` for raw inputs ``x`` ``(B, d)``."""
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))


@dataclass
class SAETrainLog:
    """What happened during training: per-step losses and the resampling events."""

    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    resampled: list[tuple[int, int]] = field(default_factory=list)  # (step, number of latents)
    config: dict[str, Any] = field(default_factory=dict)


def _as_source(data: Data) -> tuple[Any, int, int]:
    if isinstance(data, ActivationStore):
        return data.data, len(data), data.dim
    if isinstance(data, torch.Tensor):
        return data.detach().float().cpu(), data.shape[0], data.shape[1]
    if isinstance(data, np.ndarray):
        return data, data.shape[0], data.shape[1]
    raise InputError(f"data must be a tensor, array or ActivationStore, got {type(data).__name__}")


def _rows(src: Any, idx: np.ndarray, device: str) -> torch.Tensor:
    if isinstance(src, torch.Tensor):
        return src[torch.from_numpy(idx)].to(device)
    return torch.from_numpy(np.asarray(src[np.sort(idx)], dtype=np.float32)).to(device)


def iter_batches(data: Data, batch_size: int = 4096) -> Iterator[torch.Tensor]:
    """Rows of ``data`` in order, as float32 tensors ``(b, d)``."""
    src, n, _ = _as_source(data)
    for s in range(0, n, batch_size):
        yield _rows(src, np.arange(s, min(n, s + batch_size)), "cpu")


@torch.no_grad()
def fit_normaliser(sae: SparseAutoencoder, data: Data, seed: int = 0, max_rows: int = 8192) -> SparseAutoencoder:
    """Set the SAE's input centre ``μ`` and scale ``s`` (so that ``E‖(x − μ)/s‖² = d``) from ``data``."""
    src, n, _ = _as_source(data)
    _fit_normaliser(sae, src, n, np.random.default_rng(seed), str(sae.W_enc.device), max_rows)
    return sae


def _fit_normaliser(sae: SparseAutoencoder, src: Any, n: int, rng: np.random.Generator, device: str,
                    max_rows: int = 8192) -> None:
    x = _rows(src, rng.choice(n, size=min(n, max_rows), replace=False), device)
    mu = x.mean(0)
    scale = ((x - mu).pow(2).sum(1).mean() / x.shape[1]).sqrt().clamp_min(1e-8)  # E‖x̃‖² = d
    sae.mu.copy_(mu)
    sae.scale.copy_(scale)


def _resample(sae: SparseAutoencoder, opt: torch.optim.Adam, dead: torch.Tensor, src: Any, n: int,
              rng: np.random.Generator, device: str) -> None:
    """Re-initialise ``dead`` latents towards inputs the SAE reconstructs worst (Bricken et al. 2023)."""
    x = _rows(src, rng.choice(n, size=min(n, 4096), replace=False), device)
    with torch.no_grad():
        xn = sae.normalise_input(x)
        resid = xn - (F.linear(sae.activate(sae.pre_activations(xn)), sae.W_dec) + sae.b_dec)  # (M, d)
        err = resid.pow(2).sum(1).double()
        p = (err / err.sum()).cpu().numpy() if float(err.sum()) > 0 else None
        pick = torch.from_numpy(rng.choice(len(x), size=int(dead.numel()), replace=True, p=p)).to(device)
        dirs = F.normalize(resid[pick], dim=1)  # (n_dead, d)
        alive = torch.ones(sae.n_latents, dtype=torch.bool, device=device)
        alive[dead] = False
        enc_norm = sae.W_enc[alive].norm(dim=1).mean() if bool(alive.any()) else torch.tensor(1.0, device=device)
        sae.W_dec[:, dead] = dirs.T
        sae.W_enc[dead] = dirs * 0.2 * enc_norm
        sae.b_enc[dead] = 0.0
    for prm, rows_dim in ((sae.W_enc, 0), (sae.b_enc, 0), (sae.W_dec, 1)):
        state = opt.state.get(prm, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(rows_dim, dead, 0.0)


def train_sae(data: Data, config: SAEConfig = SAEConfig(), progress: bool = True,
              init: SparseAutoencoder | None = None) -> tuple[SparseAutoencoder, SAETrainLog]:
    """Train a sparse autoencoder on rows of ``data`` ``(N, d)``.

    Args:
        data: Activations: a tensor, an array or an :class:`ActivationStore` (read batch by batch).
        config: :class:`SAEConfig`.
        progress: tqdm bar over steps.
        init: Continue from this SAE (a copy is trained, its normaliser kept) instead of a fresh one.

    Returns:
        ``(sae, log)``; the SAE is in eval mode on ``config.device``.
    """
    cfg = config
    src, n, d = _as_source(data)
    if n < 2:
        raise InputError(f"need at least 2 rows to train an SAE, got {n}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if init is None:
        sae = SparseAutoencoder(d, cfg.n_latents, cfg.kind, cfg.k).to(cfg.device)
        _fit_normaliser(sae, src, n, rng, cfg.device)
    else:
        if init.W_enc.shape != (cfg.n_latents, d) or init.kind != cfg.kind:
            raise InputError(f"init SAE ({init.kind}, {tuple(init.W_enc.shape)}) does not match the config "
                             f"({cfg.kind}, ({cfg.n_latents}, {d}))")
        sae = copy.deepcopy(init).to(cfg.device).train()
        sae.k = cfg.k
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    since_active = torch.zeros(cfg.n_latents, dtype=torch.long, device=cfg.device)
    log = SAETrainLog(config=asdict(cfg))
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {cfg.kind} SAE", leave=False, disable=not progress)
    for step in bar:
        x = _rows(src, rng.integers(0, n, size=cfg.batch_size), cfg.device)
        xn = sae.normalise_input(x)
        z = sae.activate(sae.pre_activations(xn))  # (B, K)
        rec = F.linear(z, sae.W_dec) + sae.b_dec
        mse = (rec - xn).pow(2).sum(1).mean()
        loss = mse + cfg.l1 * z.abs().sum(1).mean() if cfg.kind == "relu" else mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # drop the gradient component that would change decoder norms
            g = sae.W_dec.grad
            g -= sae.W_dec * (g * sae.W_dec).sum(0, keepdim=True)
        opt.step()
        sae.normalise_decoder()
        active = (z > 0).any(0)
        since_active = torch.where(active, torch.zeros_like(since_active), since_active + 1)
        log.loss.append(float(loss.detach()))
        log.mse.append(float(mse.detach()) / d)
        if cfg.resample_every and step % cfg.resample_every == 0 and step < cfg.steps:
            dead = torch.nonzero(since_active >= cfg.dead_after).flatten()
            if dead.numel():
                _resample(sae, opt, dead, src, n, rng, cfg.device)
                since_active[dead] = 0
                log.resampled.append((step, int(dead.numel())))
        if step % 100 == 0:
            bar.set_postfix(mse=f"{log.mse[-1]:.4f}")
    return sae.eval(), log


@torch.no_grad()
def sae_latents(sae: SparseAutoencoder, data: Data, batch_size: int = 4096) -> torch.Tensor:
    """Latent activations of every row ``(N, K)`` (CPU float32)."""
    dev = sae.W_enc.device
    return torch.cat([sae.encode(x.to(dev)).cpu() for x in iter_batches(data, batch_size)])


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, data: Data, batch_size: int = 4096) -> dict[str, float]:
    """Reconstruction quality and sparsity on ``data``.

    Returns:
        ``{"mse", "explained_variance", "l0", "dead_fraction"}``: MSE per element in the input's
        units; ``1 − SSE / SST`` with ``SST`` around the data mean; mean active latents per row; share
        of latents never active on ``data``.
    """
    dev = sae.W_enc.device
    sse, n, l0 = 0.0, 0, 0.0
    s1: torch.Tensor | None = None
    s2 = 0.0
    ever = torch.zeros(sae.n_latents, dtype=torch.bool)
    for x in iter_batches(data, batch_size):
        x = x.to(dev).double()
        xh, z = sae(x.float())
        sse += float((xh.double() - x).pow(2).sum())
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 += float(x.pow(2).sum())
        l0 += float((z > 0).sum())
        ever |= (z > 0).any(0).cpu()
        n += x.shape[0]
    d = sae.W_enc.shape[1]
    sst = s2 - float(s1.pow(2).sum()) / n  # Σ‖x − x̄‖²
    return {"mse": sse / (n * d), "explained_variance": 1.0 - sse / max(sst, 1e-30), "l0": l0 / n,
            "dead_fraction": float((~ever).float().mean())}


__all__ = ["SAEConfig", "SAETrainLog", "SparseAutoencoder", "evaluate_sae", "fit_normaliser", "iter_batches",
           "sae_latents", "train_sae"]
