"""`ttsops bench early-stop`: curve files in, the table and metrics out (in-process, tiny curves)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ttsops.bench import Curve, alignment_onset, load_curve, main, score
from ttsops.errors import DataError


def write_json(path: Path, name: str, label: str, loss, align=None) -> None:
    n = len(loss)
    cols = {"step": list(range(10, 10 * n + 1, 10)), "epoch": list(range(1, n + 1)),
            "val_loss": ["nan" if isinstance(v, float) and math.isnan(v) else v for v in loss]}
    if align is not None:
        cols["attention_alignment_score"] = list(align)
    path.write_text(json.dumps({"format": "ttsops.curve/v1", "name": name, "label": label,
                                "source": {"kind": "synthetic"}, "columns": cols}))


def test_csv_and_json_curves_load_alike(tmp_path):
    (tmp_path / "a.csv").write_text(
        "# name: run-a\n# label: plateau\n# source.kind: train.py\n"
        "step,epoch,val_loss,attention_alignment_score\n10,1,2.0,0.1\n20,2,1.5,\n30,3,nan,0.9\n")
    c = load_curve(tmp_path / "a.csv")
    assert (c.name, c.label, c.source, c.length) == ("run-a", "plateau", "train.py", 3)
    assert math.isnan(c.columns["val_loss"][2]) and math.isnan(c.columns["attention_alignment_score"][1])
    write_json(tmp_path / "b.json", "run-b", "plateau", [2.0, 1.5, math.nan], [0.1, None, 0.9])
    b = load_curve(tmp_path / "b.json")
    np.testing.assert_array_equal(np.isnan(b.columns["val_loss"]), np.isnan(c.columns["val_loss"]))


def test_bad_curve_file_is_one_clear_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"columns": {"epoch": [1, 2]}}))
    with pytest.raises(DataError, match="x.json.*val_loss"):
        load_curve(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"columns": {"val_loss": [1, "abc"]}}))
    with pytest.raises(DataError, match="y.json"):
        load_curve(tmp_path / "y.json")


def test_saved_and_regret_definitions():
    loss = np.array([3.0, 2.0, 1.5, 1.2, 1.0, 1.0, 0.99, 1.0])
    align = np.array([0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    c = Curve("c", "plateau", "synthetic", {"val_loss": loss, "attention_alignment_score": align,
                                           "epoch": np.arange(1.0, 9.0)})
    o = score(c, "m", (4, "plateau"), threshold=0.8, deadline=20)
    assert o.saved == pytest.approx(0.5) and o.regret == pytest.approx((1.2 - 0.99) / 0.99)
    early = score(c, "m", (2, "plateau"), threshold=0.8, deadline=20)
    assert math.isinf(early.regret) and early.plateau_before_alignment  # nothing usable yet
    assert early.regret_raw == pytest.approx((2.0 - 0.99) / 0.99)
    never = score(c, "m", None, threshold=0.8, deadline=20)
    assert (never.saved, never.regret, never.stop) == (0.0, 0.0, None)


def test_alignment_onsets():
    mk = lambda a: Curve("c", "x", "s", {"val_loss": np.ones(len(a)), "attention_alignment_score": np.array(a),  # noqa: E731
                                         "epoch": np.arange(1.0, len(a) + 1)})
    assert alignment_onset(mk([0.2, 0.9, 0.9, 0.85, 0.3, 0.3, 0.3, 0.2]), 0.8, 20) == 4
    assert alignment_onset(mk([0.2, 0.9, 0.7, 0.9, 0.9]), 0.8, 20) is None  # a dip, not a collapse
    assert alignment_onset(mk([0.2] * 30), 0.8, 20) == 19  # epoch 20: the deadline
    assert alignment_onset(mk([0.2] * 10), 0.8, 20) is None


def test_cli_replays_and_reports(tmp_path, capsys):
    t = np.arange(1, 41)
    write_json(tmp_path / "plateau.json", "plateau", "plateau", list(0.5 + np.exp(-t / 3)),
               list(np.minimum(0.95, 0.2 + 0.1 * t)))
    write_json(tmp_path / "diverging.json", "diverging", "diverging",
               [2.0, 1.5, 1.2, 1.0, 2.5, 5.0, 9.0] + [math.nan] * 10)
    out = tmp_path / "result.json"
    assert main(["early-stop", str(tmp_path), "--per-curve", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble" in text and "patience" in text and "no_stopping" in text
    data = json.loads(out.read_text())
    by = {(o["curve"], o["method"]): o for o in data["outcomes"]}
    assert by[("diverging", "ensemble")]["reason"] == "divergence" and by[("diverging", "ensemble")]["stop"] == 7
    assert by[("plateau", "ensemble")]["stop"] is not None and by[("plateau", "no_stopping")]["stop"] is None
    assert {r["method"] for r in data["summary"]} >= {"ensemble", "gp_forecast", "attention", "patience"}


def test_cli_errors(tmp_path):
    with pytest.raises(DataError, match="no \\*.json"):
        main(["early-stop", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["nonsense"])
