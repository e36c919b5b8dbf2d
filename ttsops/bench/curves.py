"""Learning-curve files (benchmarks/curves/FORMAT.md: JSON, or CSV with ``# key: value`` headers)
read into ``Curve``: what ``ttsops bench early-stop`` replays and the recorded-curve tests load."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttsops.errors import DataError


@dataclass(frozen=True)
class Curve:
    name: str
    label: str
    source: str  # "synthetic" | "train.py" | ...
    columns: dict[str, np.ndarray]
    metric: str = "val_loss"

    @property
    def length(self) -> int:
        return int(self.columns[self.metric].size)


def _num(v: Any) -> float:
    if v is None or v == "":
        return math.nan
    try:
        return float(v)  # float() reads "nan", "inf", "-inf"
    except (TypeError, ValueError):
        raise DataError(f"not a number: {v!r}") from None


def load_curve(path: Path) -> Curve:
    """One curve file (JSON or CSV, see benchmarks/curves/FORMAT.md)."""
    try:
        if path.suffix == ".json":
            doc = json.loads(path.read_text())
            cols = doc["columns"]
            meta = {"name": doc.get("name", path.stem), "label": doc.get("label", "unlabelled"),
                    "source": doc.get("source", {}).get("kind", "unknown"),
                    "metric": doc.get("objective", {}).get("metric", "val_loss")}
        else:
            meta, cols = _read_csv(path)
        columns = {k: np.array([_num(v) for v in vals], dtype=float) for k, vals in cols.items()}
    except (KeyError, ValueError, DataError, OSError) as e:
        raise DataError(f"{path}: unreadable curve: {e}") from None
    curve = Curve(meta["name"], meta["label"], meta["source"], columns, meta["metric"])
    if curve.metric not in columns or curve.length < 2:
        raise DataError(f"{path}: objective column {curve.metric!r} missing or shorter than 2")
    return curve


def _read_csv(path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    lines = path.read_text().splitlines()
    meta = {"name": path.stem, "label": "unlabelled", "source": "unknown", "metric": "val_loss"}
    keys = {"name": "name", "label": "label", "source.kind": "source", "objective.metric": "metric"}
    for line in lines:
        if line.startswith("#") and ":" in line:
            k, v = line[1:].split(":", 1)
            if k.strip() in keys:
                meta[keys[k.strip()]] = v.strip()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return meta, {k: [r.get(k, "") for r in rows] for k in (rows[0] if rows else {})}


def load_curves(root: Path) -> list[Curve]:
    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".csv") and p.is_file())
    if not files:
        raise DataError(f"{root}: no *.json or *.csv curves found")
    return [load_curve(p) for p in files]
