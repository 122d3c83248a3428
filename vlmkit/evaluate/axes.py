"""Tables of the grid's three newer axes: invariance vs sensitivity of text embeddings, transfer matrices
and factor-by-factor error ratios.

* :func:`invariance_sensitivity` — for the same caption, how far a **meaning-preserving** rewrite
  (synonym, paraphrase) and a **meaning-changing** one (another colour, object, count, position) move its
  text embedding, and their ratio (language-guided invariance probing: a good encoder is invariant to
  the first and sensitive to the second; ratio ≫ 1). On the toy world the rewrites come from the scene's
  ground truth (:func:`vlmkit.toyworld.probes.probe_set`: each flip is checked to make the caption false);
  on real captions from the registered text perturbations (``synonym``/``paraphrase`` vs
  ``swap_color``/``swap_object``/``swap_count``).
* :func:`transfer_matrix` — source → target table of an attack's transfer cells with the white-box
  diagonal (the grid's rows; a transfer cell crafted on the measured model equals the white-box cell).
* :func:`factor_table` — per (factor, value), accuracy and the error ratio ``P(error | value) / P(error)``
  (Idrissi et al. 2022, ImageNet-X) from the per-image outcomes the engine stored, within each factor's
  own sweep when the annotations say which factor was forced (the toy world's one-factor-at-a-time sets).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlmkit.errors import InputError
from vlmkit.evaluate.intervals import Items, interval
from vlmkit.metrics.drift import cosine_drift
from vlmkit.metrics.factors import accuracy_by_factor, factor_error_ratios
from vlmkit.results import make_row
from vlmkit.runtime import derive_seed

#: Text perturbations used as rewrites of real captions (toy captions use the grammar's probes).
PRESERVING = ("synonym", "paraphrase")
CHANGING = ("swap_color", "swap_object", "swap_count")


def _load(model: str | Any, device: str) -> Any:
    if not isinstance(model, str):
        return model
    from vlmkit.evaluate.engine import get_task, loaded_model
    from vlmkit.runtime import resolve_device

    return loaded_model(get_task("retrieval"), model, resolve_device(device))


def caption_rewrites(captions: Sequence[str], *, seed: int = 0, severity: int = 1) -> pd.DataFrame:
    """Meaning-preserving and meaning-changing rewrites of real captions with the registered text
    perturbations; a rewrite that leaves the caption unchanged (nothing to swap) is dropped.

    Returns:
        One row per rewrite: ``index`` (the caption), ``kind`` (the perturbation), ``caption``,
        ``preserves_meaning``; plus one ``original`` row per caption.
    """
    from vlmkit.perturb.text import perturb_texts

    rows = [{"index": i, "kind": "original", "caption": c, "preserves_meaning": True} for i, c in enumerate(captions)]
    for name in (*PRESERVING, *CHANGING):
        for i, (c, new) in enumerate(zip(captions, perturb_texts(name, list(captions), severity, seed))):
            if new != c:
                rows.append({"index": i, "kind": name, "caption": new, "preserves_meaning": name in PRESERVING})
    return pd.DataFrame(rows)


def invariance_sensitivity(models: Sequence[str | Any], probes: pd.DataFrame | Sequence[dict[str, Any]], *,
                           dataset: str = "", seed: int = 0, n_boot: int = 1000, ci: float = 0.95,
                           device: str = "cpu") -> pd.DataFrame:
    """Text-embedding drift of meaning-preserving vs meaning-changing rewrites, per model.

    Args:
        models: Model specs or loaded VLMs.
        probes: Records ``{index, kind, caption, preserves_meaning}`` with one ``original`` per index
            (:func:`vlmkit.toyworld.probes.probe_set`'s table, or :func:`caption_rewrites`).
        dataset: Name in the table.
        seed: Seeds the bootstrap.
        n_boot, ci: The intervals (captions resampled).

    Returns:
        Tidy rows (``kind="probe"``; ``label`` the rewrite kind; ``preserves_meaning``): ``text_drift_mean`` —
        the mean cosine drift of each rewrite kind from its original (captions resampled), of all
        preserving rewrites (``label="invariance"``) and all changing ones (``"sensitivity"``) — and
        ``sensitivity_ratio`` (``label="ratio"``) = sensitivity / invariance, its interval from resampling
        captions (paired: a caption's preserving and changing rewrites go together). Written with
        :func:`vlmkit.results.write_table`, the report shows them.
    """
    table = pd.DataFrame(list(probes)) if not isinstance(probes, pd.DataFrame) else probes
    need = {"index", "kind", "caption", "preserves_meaning"}
    if not need <= set(table.columns) or not (table["kind"] == "original").any():
        raise InputError(f"probes need columns {sorted(need)} and 'original' rows; got {sorted(table.columns)}")
    orig = table[table.kind == "original"].set_index("index")["caption"]
    rest = table[(table.kind != "original") & table["index"].isin(orig.index)].reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    for m in models:
        vlm = _load(m, device)
        name = getattr(vlm, "name", str(m))
        with torch.no_grad():
            e0 = vlm.encode_text(list(orig.values)).float()  # (I, D)
            e1 = vlm.encode_text(list(rest.caption)).float()  # (R, D)
        pos = {idx: j for j, idx in enumerate(orig.index)}
        d = cosine_drift(e0[[pos[i] for i in rest["index"]]], e1).cpu().numpy()  # (R,)
        rest_d = rest.assign(drift=d)

        def row(kind: str, items: Items, preserves: Any, n: int) -> None:
            value, lo, hi, how = interval(items, n_boot=n_boot, ci=ci, seed=derive_seed(seed, name, kind))
            family = {True: "meaning-preserving", False: "meaning-changing", None: "summary"}[preserves]
            rows.append(make_row(model=name, dataset=dataset, perturbation=f"probe:{kind}", metric=(
                "sensitivity_ratio" if kind == "ratio" else "text_drift_mean"), value=value, n=n, seed=seed,
                kind="probe", label=kind, family=family, preserves_meaning=preserves, ci_low=lo, ci_high=hi,
                ci=ci, ci_method=how, n_boot=n_boot if "percentile" in how else 0))

        for kind, g in rest_d.groupby("kind", sort=False):
            row(str(kind), Items(g.drift.values, groups=g["index"].values), bool(g.preserves_meaning.iloc[0]), len(g))
        per = rest_d.groupby(["index", "preserves_meaning"]).drift.mean().unstack()  # (captions, {False, True})
        per = per.dropna()
        if per.empty or True not in per or False not in per:
            continue
        row("invariance", Items(per[True].values), True, len(per))
        row("sensitivity", Items(per[False].values), False, len(per))
        row("ratio", Items(np.stack([per[False].values, per[True].values], 1), statistic="ratio"), None, len(per))
    return pd.DataFrame(rows)


def transfer_matrix(rows: pd.DataFrame, metric: str = "i2t_R@1", *, attack: str | None = None,
                    dataset: str | None = None, with_interval: bool = False) -> pd.DataFrame:
    """Source → target matrix of one attack's transfer cells: ``metric`` of the target model on images
    crafted on the source (rows: source, columns: target); the diagonal is the white-box cell.

    Args:
        rows: Tidy rows of a grid with transfer cells (attack ``params`` holding ``source``).
        metric: e.g. ``"i2t_R@1"``, ``"top1"`` (robust accuracy) or ``"IFR"`` (attack success: answers changed).
        attack: The attack's label without its source (default: the only one; an error when several).
        dataset: Restrict to one dataset (default: the only one).
        with_interval: Cells as ``"0.62 [0.41, 0.80]"`` strings instead of numbers.
    """
    atk = rows[(rows.kind == "attack") & (rows.metric == metric)].copy()
    if dataset is not None:
        atk = atk[atk.dataset == dataset]
    if atk.empty:
        raise InputError(f"transfer_matrix: no attack rows of metric {metric!r}" + (f" on {dataset!r}" if dataset else ""))
    params = atk["params"].map(json.loads)
    atk["source"] = [p.get("source") for p in params]
    atk["attack"] = [json.dumps({"name": n, **{k: v for k, v in p.items() if k != "source"}}, sort_keys=True)
                     for n, p in zip(atk.perturbation, params)]
    with_src = atk[atk.source.notna()]
    if with_src.empty:
        raise InputError("transfer_matrix: the rows hold no transfer cells (attack params without 'source')")
    keys = sorted(set(with_src.attack)) if attack is None else [k for k in set(with_src.attack)
                                                                  if _attack_label(k) == attack]
    if len(keys) != 1:
        raise InputError(f"transfer_matrix: pick one attack; found {[_attack_label(k) for k in sorted(set(with_src.attack))]}")
    sel = atk[atk.attack == keys[0]].copy()
    if sel.dataset.nunique() > 1:
        raise InputError(f"transfer_matrix: pick a dataset; found {sorted(sel.dataset.unique())}")
    sel["source"] = sel.source.fillna(sel.model)  # the white-box cell is the diagonal
    sel = sel.drop_duplicates(["source", "model"], keep="last")
    if with_interval:
        sel["cell"] = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(sel.value, sel.ci_low, sel.ci_high)]
        out = sel.pivot(index="source", columns="model", values="cell")
    else:
        out = sel.pivot(index="source", columns="model", values="value")
    out.index.name, out.columns.name = "source", "target"
    return out


def _attack_label(key: str) -> str:
    p = json.loads(key)
    name = p.pop("name")
    return " ".join([name, *(f"{k}={v}" for k, v in sorted(p.items()))])


def factor_table(rows: pd.DataFrame, dataset: Any, *, metric: str = "top1", label: str = "clean",
                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy and error ratio per (factor, value) for each model, from the engine's per-image outcomes.

    Args:
        rows: Tidy rows (with ``outcomes``: the parquet table :func:`evaluate_grid` returns).
        dataset: The evaluated dataset with a ``factors`` DataFrame aligned with its images (a
            ``factors`` dataset spec, or the toy world's ``toy-factors`` set).
        metric: A per-image 0/1 outcome: ``top1``, ``i2t_R@1`` ...
        label: The cell (``"clean"`` or a perturbation's label).

    Returns:
        One row per (model, factor, value): ``n, n_errors, error_rate, overall_error_rate, error_ratio,
        ratio_low, ratio_high, accuracy, accuracy_low, accuracy_high``. When the annotations have a ``sweep`` column (one factor forced at a time), each
        factor's rows use only the images of its own sweep.
    """
    fac = getattr(dataset, "factors", None)
    if not isinstance(fac, pd.DataFrame):
        raise InputError(f"dataset {getattr(dataset, 'name', '')!r} has no per-image factors "
                         "(give its spec a 'factors' file, or use the toy world's 'toy-factors' set)")
    name = getattr(dataset, "name", "")
    sel = rows[(rows.dataset == name) & (rows.metric == metric) & (rows.label == label)]
    if sel.empty or "outcomes" not in sel:
        raise InputError(f"factor_table: no {metric!r} rows with outcomes for {name!r} at {label!r}")
    cols = [c for c in fac.columns if c not in ("file_name", "class", "label", "sweep")]
    out = []
    for _, r in sel.iterrows():
        correct = np.asarray(r["outcomes"], dtype=float) > 0.5  # (N,)
        if len(correct) != len(fac):
            raise InputError(f"factor_table: {len(correct)} outcomes for {len(fac)} annotated images of {name!r}")
        for f in cols:
            mask = (fac["sweep"] == f).values if "sweep" in fac else np.ones(len(fac), bool)
            if not mask.any():
                continue
            labels = {f: fac[f].values[mask]}
            ratio = factor_error_ratios(correct[mask], labels, n_boot=n_boot, seed=derive_seed(seed, r.model, f),
                                        binary="both")
            acc = accuracy_by_factor(correct[mask], labels)
            t = ratio.merge(acc[["factor", "value", "accuracy", "accuracy_low", "accuracy_high"]],
                            on=["factor", "value"], how="left")
            t.insert(0, "model", r.model)
            t.insert(1, "dataset", name)
            out.append(t)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def factor_rows(table: pd.DataFrame, *, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """:func:`factor_table` as tidy rows (``kind="factor"``, ``label`` ``factor=value``; metrics
    ``error_ratio`` and ``accuracy`` with their intervals), for :func:`vlmkit.results.write_table` and the report."""
    rows = []
    for r in table.itertuples():
        common = dict(model=r.model, dataset=r.dataset, perturbation=f"factor:{r.factor}", n=int(r.n), seed=seed,
                      kind="factor", family=r.factor, label=f"{r.factor}={r.value}", ci=ci)
        rows.append(make_row(metric="error_ratio", value=r.error_ratio, ci_low=r.ratio_low, ci_high=r.ratio_high,
                             ci_method="percentile", **common))
        rows.append(make_row(metric="accuracy", value=r.accuracy, ci_low=r.accuracy_low, ci_high=r.accuracy_high,
                             ci_method="wilson", **common))
    return pd.DataFrame(rows)


__all__ = ["CHANGING", "PRESERVING", "caption_rewrites", "factor_rows", "factor_table", "invariance_sensitivity", "transfer_matrix"]
