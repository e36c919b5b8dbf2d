"""`ttsops bench early-stop`: curve files in, the table and metrics out (in-process, tiny curves)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ttsops.bench.cli import detector_params, main
from ttsops.bench.curves import Curve, load_curve
from ttsops.bench.replay import (
    METHODS,
    alignment_onset,
    ceiling,
    hindsight_stop,
    score,
    summarize,
    usable_mask,
)
from ttsops.errors import ConfigError, DataError
from ttsops.smart_tuner.early_stop.attention import running_peak
from ttsops.smart_tuner.early_stop.controller import DetectorParams


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


def test_the_oracle_stops_at_the_earliest_point_without_regret():
    loss = np.array([3.0, 2.0, 1.5, 1.2, 1.004, 1.1, 1.0, 1.05, 1.02, 1.01])
    align = np.array([0.1, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    c = Curve("c", "plateau", "synthetic", {"val_loss": loss, "attention_alignment_score": align,
                                           "epoch": np.arange(1.0, 11.0)})
    assert hindsight_stop(c, 0.005, threshold=0.8, deadline=20, margin=0.15) == 5  # 1.004 is within 0.5% of 1.0
    assert hindsight_stop(c, 0.001, threshold=0.8, deadline=20, margin=0.15) == 7
    # a run that never aligns has no usable model: the oracle stops it at once, and it is no plateau stop
    never = Curve("n", "never_aligned", "synthetic", {"val_loss": loss[::-1].copy(), "attention_alignment_score": np.full(10, 0.2),
                                                      "epoch": np.arange(1.0, 11.0)})
    assert hindsight_stop(never, 0.005, threshold=0.8, deadline=20, margin=0.15) == 1
    outs = [score(cv, "oracle", (hindsight_stop(cv, 0.005, threshold=0.8, deadline=20, margin=0.15), "hindsight"),
                  threshold=0.8, deadline=20) for cv in (c, never)]
    assert not any(o.plateau_before_alignment for o in outs)
    row = next(r for r in summarize(outs, 0.005) if r["method"] == "oracle")
    assert row["false_stop_rate"] == 0.0 and row["median_S"] == pytest.approx((0.5 + 0.9) / 2) == row["mean_S_earned"]
    rows = [{"method": "oracle", "median_S": 0.3, "mean_S": 0.4, "mean_S_earned": 0.4, "median_S_with_false_budget": 0.35},
            {"method": "ensemble", "median_S": 0.1, "mean_S": 0.3, "mean_S_earned": 0.2}]
    text = ceiling(rows)
    assert "median S 0.30" in text and "out of reach" in text and "at most 0.35" in text and "earns 50%" in text
    rows[0]["median_S_with_false_budget"] = 0.6
    assert "reachable only with false stops (up to 0.60" in ceiling(rows)
    # 20 curves: the false-stop budget (5%) is one curve, spent on the one that saves least. S here is
    # 0.9, 0.9, 0.8, 0.8, ..., 0.0, 0.0; the two middle values 0.5 and 0.4 become 0.5 and 0.5 when the
    # lowest S (0.0) is replaced by 1.0
    many = [score(c, "oracle", (t, "hindsight"), threshold=0.8, deadline=20) for t in range(1, 11) for _ in (0, 1)]
    row = next(r for r in summarize(many, 0.005) if r["method"] == "oracle")
    assert row["median_S"] == pytest.approx(0.45) and row["median_S_with_false_budget"] == pytest.approx(0.5)


def test_usable_validations_follow_the_collapse_rule():
    a = np.array([0.1, 0.5, 0.85, 0.88, 0.72, 0.9, 0.6, 0.55, np.nan, 0.95])
    # reached when the robust peak (highest median of 3) is >= 0.8: at 0.88, not at the first 0.85;
    # 0.72 is more than 0.1 under the robust peak 0.85 (collapsed), 0.6 / 0.55 too; NaN is not usable
    np.testing.assert_allclose(running_peak(a)[[1, 2, 3, 5, 9]], [0.1, 0.5, 0.85, 0.88, 0.88])
    assert usable_mask(a, 0.8, 0.1).tolist() == [False, False, False, True, False, True, False, False, False, True]
    assert not usable_mask(np.array([0.1, 0.5, 0.85, 0.6, 0.6]), 0.8, 0.15).any()  # one lucky 0.85: never aligned
    loss = np.array([5.0, 4.0, 3.0, 2.9, 2.95, 2.8, 1.0, 0.9, 0.8, 2.7])
    c = Curve("c", "alignment_collapse", "synthetic", {"val_loss": loss, "attention_alignment_score": a,
                                                        "epoch": np.arange(1.0, 11.0)})
    o = score(c, "m", (7, "alignment_collapsed"), threshold=0.8, deadline=20)
    assert o.regret == pytest.approx((2.8 - 2.7) / 2.7)  # the collapsed 1.0 / 0.9 / 0.8 do not count
    assert o.regret_raw == pytest.approx((1.0 - 0.8) / 0.8)
    healthy = Curve("h", "plateau", "synthetic", dict(c.columns))
    everyone = [score(cv, m, stop, threshold=0.8, deadline=20) for m in METHODS
                for cv, stop in ((c, (7, "alignment_collapsed")), (healthy, (10, "plateau")))]
    r = next(r for r in summarize(everyone, 0.005) if r["method"] == "ensemble")
    assert r["false_stop_rate_raw"] == pytest.approx(0.5)  # the pruned collapse counts as raw-false
    assert r["false_stop_rate_raw_healthy"] == 0.0  # ... but it is not a healthy curve


def test_alignment_onsets():
    mk = lambda a: Curve("c", "x", "s", {"val_loss": np.ones(len(a)), "attention_alignment_score": np.array(a),  # noqa: E731
                                         "epoch": np.arange(1.0, len(a) + 1)})
    assert alignment_onset(mk([0.2, 0.9, 0.9, 0.85, 0.3, 0.3, 0.3, 0.2]), 0.8, 20) == 4
    assert alignment_onset(mk([0.2, 0.9, 0.7, 0.9, 0.9]), 0.8, 20) is None  # a dip, not a collapse
    assert alignment_onset(mk([0.2] * 30), 0.8, 20) == 19  # epoch 20: the deadline
    assert alignment_onset(mk([0.2] * 10), 0.8, 20) is None
    assert alignment_onset(mk([0.7] * 30), 0.8, 20) is None  # marginal: within 0.15 of 0.8, not a failure
    assert alignment_onset(mk([0.7] * 22 + [0.5] * 8), 0.8, 20) == 24  # the median of 5 falls below 0.65


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
    assert {r["method"] for r in data["summary"]} >= {"ensemble", "gp_forecast", "attention", "patience", "oracle"}
    assert data["ceiling"].startswith("ceiling: stopping with hindsight") and "ceiling:" in text
    labels = {r["label"]: r for r in data["by_label"]}
    assert labels["diverging"]["curves"] == 1 and labels["diverging"]["ensemble_false"] == 0
    assert labels["plateau"]["oracle_false"] == 0 and "per label" in text
    assert "oracle share" in text
    # the ensemble prunes the divergence at its 7th validation: its share of the oracle's savings
    div = labels["diverging"]
    assert div["oracle_share"] == pytest.approx(div["ensemble_mean_S_earned"] / div["oracle_mean_S_earned"])
    assert 0 < div["oracle_share"] <= 1


def test_oracle_share_counts_false_stops_as_nothing_saved():
    from ttsops.bench.replay import Outcome, by_label

    def out(curve, method, saved, regret):
        return Outcome(curve, "plateau", method, 5, "", saved, regret, regret, None, None, None, False)

    rows = by_label([out("a", "ensemble", 0.5, 0.0), out("b", "ensemble", 0.4, 0.2),  # b: a false stop
                     out("a", "oracle", 0.6, 0.0), out("b", "oracle", 0.2, 0.0)], min_delta=0.005)
    assert rows[0]["oracle_share"] == pytest.approx((0.5 + 0.0) / (0.6 + 0.2))
    none = by_label([out("a", "ensemble", 0.0, 0.0), out("a", "oracle", 0.0, 0.0)], 0.005)
    assert none[0]["oracle_share"] is None


def test_cli_errors(tmp_path):
    with pytest.raises(DataError, match="no \\*.json"):
        main(["early-stop", str(tmp_path)])
    write_json(tmp_path / "c.json", "c", "plateau", [2.0, 1.0, 0.9, 0.9])
    with pytest.raises(ConfigError, match="stop_treshold.*stop_threshold"):
        main(["early-stop", str(tmp_path), "--param", "stop_treshold=0.6"])
    with pytest.raises(ConfigError, match="'abc' is not a valid float"):
        main(["early-stop", str(tmp_path), "--param", "stop_threshold=abc"])
    with pytest.raises(ConfigError, match="stop_threshold cannot be none"):
        main(["early-stop", str(tmp_path), "--param", "stop_threshold=none"])
    with pytest.raises(ConfigError, match="invalid flatline_validations=2"):
        main(["early-stop", str(tmp_path), "--param", "flatline_validations=2"])
    assert detector_params(["horizon=10", "min_delta=none"]) == DetectorParams(horizon=10, min_delta=None)
    assert isinstance(detector_params(["horizon=10"]).horizon, int)
    with pytest.raises(ConfigError, match="--label overfiting: no curve .* has it \\(labels there: plateau\\)"):
        main(["early-stop", str(tmp_path), "--label", "overfiting"])
    with pytest.raises(SystemExit):
        main(["nonsense"])


def test_a_curve_labelled_healthy_has_no_alignment_failure_to_catch():
    # the score dips out of the band for 3 validations and comes back: a failure onset by the score
    # alone, but the label (what the whole curve showed) says the run was fine, so a prune there is
    # scored as a stop (with its regret), not as a failure caught
    a = [0.2, 0.8, 0.81, 0.8, 0.6, 0.58, 0.6, 0.85, 0.86]
    cols = {"val_loss": np.linspace(2, 1, len(a)), "attention_alignment_score": np.array(a),
            "epoch": np.arange(1.0, len(a) + 1)}
    assert alignment_onset(Curve("c", "converging", "s", cols), 0.8, 20) == 4
    for label, onset in (("converging", None), ("alignment_collapse", 4), ("unlabelled", 4)):
        o = score(Curve("c", label, "s", cols), "ensemble", (6, "alignment_collapsed"), threshold=0.8, deadline=20)
        assert o.onset == onset
        assert o.regret > 0  # stopped at 6 of a curve still falling: regret either way
