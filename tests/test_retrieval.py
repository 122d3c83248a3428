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


def _brute_rank(scores, positives):
    """Independent reference: walk every candidate of every row in Python."""
    out = []
    for q in range(scores.shape[0]):
        ps = [float(scores[q, c]) for c in range(scores.shape[1]) if positives[q, c]]
        best = max(ps) if ps else float("-inf")
        out.append(1 + sum(float(s) > best for s in scores[q]))
    return torch.tensor(out)


def test_first_positive_rank_counts_ties_in_the_query_favour():
    """Known answers with exact ties, a brute-force walk, and invariance to the order of the candidates
    (a sort-based rank would move with the order of tied candidates)."""
    from vlmkit.metrics import first_positive_rank

    s = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.2, 0.7, 0.7, 0.7], [0.3, 0.3, 0.3, 0.3]])
    p = torch.tensor([[False, False, True, False], [True, False, False, True], [False, False, False, False]])
    assert first_positive_rank(s, p).tolist() == [2, 1, 5]  # tie counts for the query; no positive: C + 1
    g = torch.Generator().manual_seed(3)
    s = torch.randint(0, 6, (40, 30), generator=g).float()  # many exact ties
    p = torch.rand(40, 30, generator=g) < 0.1
    r = first_positive_rank(s, p)
    assert torch.equal(r, _brute_rank(s, p))
    perm = torch.randperm(30, generator=g)
    assert torch.equal(first_positive_rank(s[:, perm], p[:, perm]), r)
    for k in (1, 3, 10):
        assert torch.equal(recall_at_k(s, p, k), r <= k)


def test_retrieval_outcomes_agree_with_ranks_both_ways_under_ties():
    """Repeated captions (identical embeddings) tie exactly; both directions match the brute-force walk."""
    from vlmkit.metrics import retrieval_outcomes

    img = _emb(12, seed=4)
    base = _emb(6, seed=5)
    t2i = torch.arange(12).repeat_interleave(3)
    txt = base[torch.randint(0, 6, (36,), generator=torch.Generator().manual_seed(6))]  # 36 captions, 6 texts
    o = retrieval_outcomes(img, txt, t2i)
    scores = txt @ img.T  # (T, N)
    pos = torch.zeros_like(scores, dtype=torch.bool)
    pos[torch.arange(36), t2i] = True
    assert torch.equal(o["t2i_rank"], _brute_rank(scores, pos))
    assert torch.equal(o["i2t_rank"], _brute_rank(scores.T, pos.T))
    for k in (1, 5, 10):
        assert torch.equal(o[f"i2t_R@{k}"], o["i2t_rank"] <= k)


def test_retrieval_outcomes_from_scores_matches_brute_force_and_rejects_bad_inputs():
    """The engine's path (ranks from the cell's ``(N, T)`` scores) against the brute-force walk, ties included;
    bad shapes, indices and cut-offs fail before any ranking."""
    from vlmkit.metrics import retrieval_outcomes_from_scores

    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 4, (9, 20), generator=g).float()  # (N, T), many exact ties
    t2i = torch.randint(0, 9, (20,), generator=g)
    o = retrieval_outcomes_from_scores(scores, t2i, ks=(1, 3))
    pos = torch.zeros(20, 9, dtype=torch.bool)
    pos[torch.arange(20), t2i] = True
    assert torch.equal(o["t2i_rank"], _brute_rank(scores.T, pos))
    assert torch.equal(o["i2t_rank"], _brute_rank(scores, pos.T))
    assert torch.equal(o["t2i_R@3"], o["t2i_rank"] <= 3) and set(o) == {
        "i2t_R@1", "t2i_R@1", "i2t_R@3", "t2i_R@3", "i2t_rank", "t2i_rank"}
    with pytest.raises(InputError, match=r"expected scores \(N, T\)"):
        retrieval_outcomes_from_scores(scores[0], t2i)
    with pytest.raises(InputError, match="one image index per caption \\(20\\)"):
        retrieval_outcomes_from_scores(scores, t2i[:19])
    with pytest.raises(InputError, match="outside 0..8"):
        retrieval_outcomes_from_scores(scores, torch.full((20,), 9))
    with pytest.raises(InputError, match="k must be >= 1"):
        retrieval_outcomes_from_scores(scores, t2i, ks=(0,))
