"""Generate the SYNTHETIC part of the early-stopping curve set (benchmarks/curves/synthetic/).

These curves are not recorded from training: they are drawn from simple, documented models of how
Tacotron2 validation curves behave, so the harness has labelled examples of every behaviour
(including long budgets that real CPU runs here cannot afford). Every file says so in
``source.kind = "synthetic"`` with the generator, seed and parameters.

Model (one validation per epoch, ``T`` epochs of budget):
- loss = floor * (1 + amp * decay(t)) + bump * (1 - alignment_progress(t)), times (1 + AR(1) noise):
  ``decay`` is exp(-t/tau) or (1 + t/t0)^-b; ``bump`` is the extra loss of a model that has not
  aligned yet, so the loss often flattens, then drops again when attention forms (as Tacotron2's does);
- alignment = a0 + (a1 - a0) * sigmoid((t - t_align) / width) + noise, clipped to [0, 1];
- attention_entropy falls as alignment rises; mel_loss ~ 0.85 loss; gate_loss decays separately.

Labels: converging, plateau, diverging (LR too high: the loss grows geometrically, in half of them ending in NaN),
never_aligned, overfitting (val rises after a minimum), noisy (converging, 1.5-3% AR(1) noise),
alignment_collapse (aligned, then the score falls and the loss rises).

    .venv/bin/python benchmarks/curves/make_synthetic.py --out benchmarks/curves/synthetic --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

LABELS = ("converging", "plateau", "diverging", "never_aligned", "overfitting", "noisy", "alignment_collapse")
STEPS_PER_EPOCH = 50


def _ar1(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    e = np.zeros(n)
    for i in range(n):
        e[i] = (phi * e[i - 1] if i else 0.0) + sigma * math.sqrt(1 - phi**2) * rng.standard_normal()
    return e


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _base(rng: np.random.Generator, label: str) -> dict:
    p = {
        "T": int(rng.integers(60, 101)), "floor": float(rng.uniform(0.3, 0.6)), "amp": float(rng.uniform(1.0, 3.0)),
        "shape": str(rng.choice(["exp", "power"])), "tau": float(rng.uniform(6, 20)),
        "b": float(rng.uniform(0.8, 1.6)), "t0": float(rng.uniform(1, 4)),
        "bump": float(rng.uniform(0.05, 0.2)), "t_align": float(rng.uniform(4, 15)),
        "width": float(rng.uniform(0.6, 2.0)), "a0": float(rng.uniform(0.1, 0.3)), "a1": float(rng.uniform(0.85, 0.95)),
        "sigma": float(rng.uniform(0.002, 0.008)), "phi": float(rng.uniform(0.2, 0.6)), "a_noise": 0.02,
    }
    if label == "plateau":
        p.update(T=int(rng.integers(80, 121)), shape="exp", tau=float(rng.uniform(2, 6)), t_align=float(rng.uniform(3, 8)))
    elif label == "noisy":
        p.update(sigma=float(rng.uniform(0.015, 0.03)), phi=float(rng.uniform(0.5, 0.8)))
    elif label == "diverging":
        p.update(t_div=float(rng.uniform(12, 35)), growth=float(rng.uniform(1.15, 1.5)), nan_after=float(rng.choice([20.0, 1e9])))
    elif label == "never_aligned":
        p.update(a1=p["a0"] + float(rng.uniform(0.0, 0.15)), t_align=float(rng.uniform(20, 60)), width=20.0)
    elif label == "overfitting":
        p.update(t_over=float(rng.uniform(20, 40)), rise=float(rng.uniform(0.002, 0.006)))
    elif label == "alignment_collapse":
        p.update(t_col=float(rng.uniform(25, 50)), a_after=float(rng.uniform(0.2, 0.5)), loss_jump=float(rng.uniform(0.05, 0.2)))
    return p


def make_curve(rng: np.random.Generator, label: str) -> tuple[dict, dict[str, np.ndarray]]:
    p = _base(rng, label)
    T = p["T"]
    t = np.arange(1, T + 1, dtype=float)
    decay = np.exp(-t / p["tau"]) if p["shape"] == "exp" else (1 + t / p["t0"]) ** -p["b"]
    prog = _sigmoid((t - p["t_align"]) / p["width"])
    if label == "never_aligned":
        prog = prog * 0.0
    align = p["a0"] + (p["a1"] - p["a0"]) * _sigmoid((t - p["t_align"]) / p["width"])
    loss = p["floor"] * (1 + p["amp"] * decay) + p["bump"] * (1 - prog)
    if label == "overfitting":
        loss = loss + p["floor"] * p["rise"] * np.clip(t - p["t_over"], 0, None)
    if label == "alignment_collapse":
        drop = _sigmoid((t - p["t_col"]) / 0.5)
        align = align * (1 - drop) + p["a_after"] * drop
        loss = loss * (1 + p["loss_jump"] * drop)
    clean = loss.copy()
    loss = loss * (1 + _ar1(rng, T, p["sigma"], p["phi"]))
    if label == "diverging":
        k = np.clip(t - p["t_div"], 0, None)
        loss = loss * p["growth"] ** k
        clean = clean * p["growth"] ** k
        align = np.where(k > 0, align * 0.85 ** k, align)
        loss = np.where(k > p["nan_after"], np.nan, loss)
    align = np.clip(align + p["a_noise"] * rng.standard_normal(T), 0, 1)
    entropy = 3.0 - 1.8 * align + 0.05 * rng.standard_normal(T)
    gate = (0.02 + 0.1 * np.exp(-t / 5)) * np.where(np.isfinite(loss), 1.0, np.nan)
    return p, {
        "step": t * STEPS_PER_EPOCH, "epoch": t, "val_loss": loss, "val_loss_noise_free": clean,
        "mel_loss": 0.85 * loss,
        "gate_loss": gate, "attention_alignment_score": align, "attention_entropy": entropy,
    }


def _clean(values: np.ndarray, integer: bool = False) -> list:
    """JSON values: NaN -> "nan", +-inf -> "inf"/"-inf" (FORMAT.md), floats rounded."""
    out: list = []
    for v in values.tolist():
        if math.isnan(v):
            out.append("nan")
        elif math.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(int(v) if integer else round(v, 6))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-label", type=int, default=4)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for label in LABELS:
        for i in range(args.per_label):
            params, cols = make_curve(rng, label)
            name = f"synthetic-{label}-{i + 1:02d}"
            doc = {
                "format": "ttsops.curve/v1", "name": name, "label": label,
                "source": {"kind": "synthetic", "generator": "benchmarks/curves/make_synthetic.py",
                           "seed": args.seed, "params": params},
                "objective": {"metric": "val_loss", "direction": "minimize"},
                "columns": {k: _clean(v, integer=k in ("step", "epoch")) for k, v in cols.items()},
            }
            (args.out / f"{name}.json").write_text(json.dumps(doc, indent=None) + "\n")
    print(f"wrote {len(LABELS) * args.per_label} curves to {args.out}")


if __name__ == "__main__":
    main()
