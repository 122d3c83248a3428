"""Retrieval metrics: closed-form cases and parity with CLIP_benchmark's definition."""

import pytest
import torch
import torch.nn.functional as F

from vlmkit.errors import InputError
from vlmkit.metrics import recall_at_k, retrieval_metrics


def _emb(n, d=16, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_identical_embeddings_give_perfect_recall():
    img = _emb(10)
    txt = img.repeat_interleave(2, dim=0)  # two identical captions per image
    m = retrieval_metrics(img, txt, torch.arange(10).repeat_interleave(2))
    assert m["i2t_R@1"] == 1.0 and m["t2i_R@1"] == 1.0 and m["i2t_medr"] == 1.0


def test_permuted_captions_give_known_recall():
    """Captions matched to a cyclic shift of the images: R@1 = 0 and the true image ranks 2nd
    when each caption sits between its own image and the shifted one."""
    img = _emb(8)
    shifted = img.roll(1, dims=0)
    txt = F.normalize(0.6 * shifted + 0.4 * img, dim=-1)  # closest to the wrong (shifted) image
    m = retrieval_metrics(img, txt, torch.arange(8))
    assert m["t2i_R@1"] == 0.0
    assert m["t2i_R@5"] == 1.0  # own image is always near the top
    exact = retrieval_metrics(img, shifted, torch.arange(8).roll(1))  # labels follow the permutation
    assert exact["t2i_R@1"] == 1.0 and exact["i2t_R@1"] == 1.0


def test_matches_clip_benchmark_definition():
    cb = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval", reason="clip_benchmark not installed")
    n, per = 30, 5
    img = _emb(n, seed=1)
    t2i = torch.arange(n).repeat_interleave(per)
    txt = F.normalize(img[t2i] + 1.2 * torch.randn(n * per, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    ours = retrieval_metrics(img, txt, t2i, ks=(1, 5, 10))
    scores = txt @ img.T
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[torch.arange(len(t2i)), t2i] = True
    for k in (1, 5, 10):
        t2i_ref = (cb.recall_at_k(scores, pos, k) > 0).float().mean().item()
        i2t_ref = (cb.recall_at_k(scores.T, pos.T, k) > 0).float().mean().item()
        assert ours[f"t2i_R@{k}"] == pytest.approx(t2i_ref)
        assert ours[f"i2t_R@{k}"] == pytest.approx(i2t_ref)
    assert 0 < ours["t2i_R@1"] < 1  # the case is not degenerate


def test_recall_rejects_bad_inputs():
    with pytest.raises(InputError, match="one image index per caption"):
        retrieval_metrics(_emb(3), _emb(4), torch.arange(3))
    with pytest.raises(InputError, match="outside 0..2"):
        retrieval_metrics(_emb(3), _emb(3), torch.tensor([0, 1, 5]))
    with pytest.raises(InputError, match="k must be >= 1"):
        recall_at_k(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool), 0)
