"""Pure parts of the segmenter: hysteresis, edge refinement, the cut plan, level/SNR/clipping."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ttsops.data.manifest import Reason, speech_lost_s
from ttsops.data.segment_plan import (
    SegmenterConfig,
    cut_cost,
    open_edges,
    plan_clips,
    refine_regions,
    speech_regions,
)
from ttsops.data.smart_segmenter import PEAK_LIMIT, clipped_ratio, lower_gate_gain, normalise, speech_stats
from ttsops.data.vad import frame_energy_db, noise_floor_db, silero_model_path
from ttsops.data.word_check import AsrWords

CFG = SegmenterConfig()


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        ([0, 0, 0, 0], []),
        ([0, 0.6, 0.6, 0.6, 0.6, 0, 0], [(1, 5)]),  # on at 0.5, off below 0.35
        ([0.6, 0.4, 0.4, 0.6, 0.1, 0.1, 0.1, 0.1], [(0, 4)]),  # 0.4 stays inside (hysteresis)
        ([0.6] * 4 + [0.1] * 2 + [0.6] * 4, [(0, 10)]),  # a 2-frame gap (0.08 s < 0.1 s) is merged
        ([0.6] * 4 + [0.1] * 4 + [0.6] * 4, [(0, 4), (8, 12)]),  # 4 frames (0.16 s) is a pause
        ([0.0, 0.9] + [0.0] * 4 + [0.6] * 5, [(6, 11)]),  # a single-frame blip (0.04 s) is dropped
    ],
)
def test_speech_regions_hysteresis(probs, expected):
    frame_s = 0.04
    got = speech_regions(np.array(probs, float), frame_s, CFG)
    flat = [t for r in got for t in r]
    assert len(got) == len(expected)
    assert flat == pytest.approx([t * frame_s for r in expected for t in r])


def _plan(regions, total=60.0, **kw):
    return plan_clips(regions, total, SegmenterConfig(**kw))


def test_every_pause_over_split_pause_is_a_cut_with_lead_and_tail_margins():
    regions = [(1.0, 3.0), (3.6, 5.0), (5.1, 6.5)]  # pauses 0.6 (a cut) and 0.1 (not a cut)
    clips = _plan(regions)
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 3.0), (3.6, 6.5)]
    assert [(c.start, c.end) for c in clips] == [pytest.approx((0.75, 3.15)), pytest.approx((3.35, 6.65))]
    assert all(c.reason is None for c in clips)


def test_a_short_pause_is_shared_between_the_margins_in_proportion():
    clips = _plan([(1.0, 3.0), (3.32, 5.0)])  # 0.32 s < 0.25 + 0.15: split 5:3
    assert clips[0].end == pytest.approx(3.12)
    assert clips[1].start == pytest.approx(3.12)
    clips = _plan([(0.1, 2.0), (3.0, 5.0)], total=5.1)  # file edges bound the first and last margin
    assert (clips[0].start, clips[1].end) == (0.0, 5.1)


def test_a_long_stretch_is_cut_at_its_longest_pause_first():
    # 14 s of speech with short pauses (none >= split_pause_s); the 0.2 s pause is the longest
    regions = [(1.0, 4.0), (4.1, 7.0), (7.2, 11.0), (11.15, 15.0)]
    clips = _plan(regions)
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 7.0), (7.2, 15.0)]
    assert all(c.reason is None and c.end - c.start <= 10.0 for c in clips)


def test_speech_without_any_pause_longer_than_max_is_rejected_too_long_without_energy():
    clips = _plan([(1.0, 13.0)])
    assert len(clips) == 1 and clips[0].reason is Reason.TOO_LONG


def _run_energy(total_s=20.0, quiet=(), level=-20.0, floor=-60.0):
    energy = np.full(int(total_s * 100), floor)
    energy[100:1400] = level  # speech 1-14 s, no pause the VAD hears
    for a, b, db in quiet:
        energy[round(a * 100) : round(b * 100)] = db
    return energy


def test_a_run_with_no_pause_is_cut_at_its_quietest_stretch_a_breath_not_a_stop_closure():
    # a 60 ms stop closure (silent, loud frames 30 ms either side) and a 120 ms breath, 10 dB louder
    energy = _run_energy(quiet=[(5.0, 5.06, -60.0), (8.0, 8.12, -50.0)])
    clips = plan_clips([(1.0, 14.0)], 20.0, CFG, energy, (False, False))
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 8.0), pytest.approx((8.12, 14.0))]
    assert all(c.reason is None and c.end - c.start <= CFG.max_clip_s for c in clips)
    assert cut_cost(energy)[503] == -20.0 and cut_cost(energy)[806] == -50.0


def test_a_quiet_stretch_that_leaves_a_short_piece_is_passed_over_when_another_fits():
    energy = _run_energy(quiet=[(1.8, 1.95, -55.0), (6.0, 6.1, -45.0)])  # the quietest is 0.8 s in
    clips = plan_clips([(1.0, 14.0)], 20.0, CFG, energy, (False, False))
    assert [round(c.speech_end, 2) for c in clips[:-1]] == [6.0]


def test_a_long_group_is_cut_at_a_pause_that_leaves_speech_on_both_sides_first():
    # the longest pause (0.25 s) leaves 0.7 s after it ("he was not | an ..." in real speech, a
    # word-final stop closure); the 0.15 s one leaves both sides room
    regions = [(1.0, 4.0), (4.15, 12.0), (12.25, 12.95)]
    clips = _plan(regions)
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 4.0), (4.15, 12.95)]
    without = _plan(regions, min_piece_s=0.5)  # no preference: the 0.7 s piece is a clip of its own
    assert [(c.speech_start, c.speech_end) for c in without] == [(1.0, 4.0), (4.15, 12.0), (12.25, 12.95)]


def test_speech_touching_a_file_edge_is_kept_when_the_recording_is_quiet_there():
    clips = plan_clips([(0.0, 2.0), (3.0, 5.0), (6.0, 7.99)], 8.0, CFG, edges_open=(False, False))
    assert [c.reason for c in clips] == [None, None, None]
    assert (clips[0].start, clips[-1].end) == (0.0, 8.0)
    clips = plan_clips([(0.0, 2.0), (3.0, 5.0), (6.0, 7.99)], 8.0, CFG, edges_open=(False, True))
    assert [c.reason for c in clips] == [None, None, Reason.TRUNCATED]


@pytest.mark.parametrize(
    ("head", "tail", "expected"),
    [(-60.0, -60.0, (False, False)), (-20.0, -60.0, (True, False)), (-60.0, -30.0, (False, True))],
)
def test_open_edges_is_loudness_at_the_first_and_last_frames(head, tail, expected):
    energy = np.full(100, -20.0)
    energy[:3], energy[-3:] = head, tail
    assert open_edges(energy, threshold_db=-50.0) == expected


def test_lower_gate_gain_counts_the_too_noisy_clips_a_5_db_lower_gate_keeps():
    recs = [
        {"kept": False, "reason": "too_noisy", "snr_db": 22.0, "speech_start": 1.0, "speech_end": 4.0},
        {"kept": False, "reason": "too_noisy", "snr_db": 19.9, "speech_start": 5.0, "speech_end": 6.0},
        {"kept": False, "reason": "too_short", "snr_db": 30.0, "speech_start": 7.0, "speech_end": 7.5},
        {"kept": True, "reason": None, "snr_db": 26.0, "speech_start": 8.0, "speech_end": 9.0},
    ]
    assert lower_gate_gain(recs, min_snr_db=25.0) == {"snr_db": 20.0, "clips": 1, "speech_s": 3.0}
    assert speech_lost_s(recs + [{"kept": False, "reason": "unreadable"}]) == {
        "too_noisy": 4.0, "too_short": 0.5, "unreadable": 0.0}  # fmt: skip


def test_short_piece_joins_its_nearer_neighbour_when_the_pause_is_short():
    clips = _plan([(1.0, 3.0), (3.5, 3.9), (5.5, 8.0)])  # 0.4 s piece, pauses 0.5 and 1.6
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 3.9), (5.5, 8.0)]


def test_short_piece_alone_between_long_pauses_is_rejected_too_short():
    clips = _plan([(1.0, 3.0), (5.0, 5.4), (7.0, 9.0)])
    assert [c.reason for c in clips] == [None, Reason.TOO_SHORT, None]


def test_speech_touching_a_file_edge_is_rejected_truncated():
    clips = _plan([(0.0, 2.0), (3.0, 5.0), (6.0, 7.99)], total=8.0)
    assert [c.reason for c in clips] == [Reason.TRUNCATED, None, Reason.TRUNCATED]


def test_plan_of_no_regions_is_empty():
    assert _plan([]) == []


def test_config_validation_names_the_values():
    with pytest.raises(ValueError, match="min_clip_s"):
        SegmenterConfig(min_clip_s=5, max_clip_s=2)
    with pytest.raises(ValueError, match="onset"):
        SegmenterConfig(onset=0.2, offset=0.5)


def test_refine_pulls_a_lagging_end_back_but_at_most_max_end_pullback():
    energy = np.full(300, -60.0)
    energy[100:150] = -20.0  # speech 1.00-1.50 s
    got = refine_regions([(1.0, 1.56)], energy, -50.0, CFG)  # VAD let go 60 ms late
    assert list(got[0]) == pytest.approx([1.0, 1.5])
    got = refine_regions([(1.0, 1.8)], energy, -50.0, CFG)  # 300 ms late: bounded to 80 ms
    assert got[0][1] == pytest.approx(1.72)


def test_refine_moves_a_late_start_back_over_energy_above_the_floor():
    energy = np.full(300, -60.0)
    energy[95:150] = -20.0
    assert refine_regions([(1.0, 1.5)], energy, -50.0, CFG)[0][0] == pytest.approx(0.95)


def test_frame_energy_and_noise_floor():
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(16000) * 0.01).astype(np.float32)  # -40 dBFS noise
    wav[6000:10000] += np.sin(np.arange(4000) * 0.2).astype(np.float32) * 0.3
    energy = frame_energy_db(wav)
    assert len(energy) == 100
    assert energy[10] == pytest.approx(-40, abs=1.5)
    probs = np.zeros(32)
    probs[12:19] = 0.9
    noise, thr = noise_floor_db(energy, probs)
    assert noise == pytest.approx(-40, abs=1.0)
    assert noise < thr < -30


def test_speech_stats_snr_of_a_known_mix():
    energy = np.full(200, -50.0)
    energy[50:150] = -20.0  # speech+noise power 1e-2, noise 1e-5: SNR = 10 log10(999) ~ 30 dB
    level, snr = speech_stats(energy, 0.0, 2.0, -45.0, -50.0)
    assert level == pytest.approx(-20.0)
    assert snr == pytest.approx(30.0, abs=0.01)
    assert speech_stats(energy, 0.0, 0.4, -45.0, -50.0) == (-120.0, 0.0)  # no active frame


def test_clipped_ratio_and_normalise():
    wav = np.zeros(1000, np.float32)
    wav[:5] = 1.0
    assert clipped_ratio(wav) == pytest.approx(0.005)
    x = (np.sin(np.arange(1000) * 0.1) * 0.01).astype(np.float32)
    y = normalise(x, level_dbfs=-43.0, target_dbfs=-23.0)  # +20 dB
    assert np.max(np.abs(y)) == pytest.approx(0.1, rel=1e-3)
    y = normalise(x, level_dbfs=-43.0, target_dbfs=0.0)  # would peak at 1.41: limited
    assert np.max(np.abs(y)) == pytest.approx(PEAK_LIMIT, rel=1e-4)


def test_model_path_is_found_without_importing_silero_vad_or_touching_torch_threads():
    code = (
        "import sys, torch; torch.set_num_threads(2)\n"
        "from ttsops.data.vad import SileroVad, silero_model_path\n"
        "import numpy as np; SileroVad().probs(np.zeros(16000, np.float32))\n"
        "assert 'silero_vad' not in sys.modules, 'silero_vad imported'\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert silero_model_path().name == "silero_vad_16k_sequence.onnx"


def _words(*spans):  # a fixed table of recognised words, as pocketsphinx would give them
    return lambda t: list(spans)


def test_a_quiet_dip_inside_a_recognised_word_gives_way_to_the_next_quietest_stretch():
    # a 100 ms dip at -60 dB (quieter than the breath at -50 dB) that the ASR hears inside a word
    energy = _run_energy(quiet=[(5.0, 5.1, -60.0), (8.0, 8.12, -50.0)])
    unchecked = plan_clips([(1.0, 14.0)], 20.0, CFG, energy, (False, False))
    assert [c.speech_end for c in unchecked[:-1]] == [5.0]
    checked = plan_clips([(1.0, 14.0)], 20.0, CFG, energy, (False, False), _words((4.8, 5.3), (8.15, 8.6)))
    assert [c.speech_end for c in checked[:-1]] == [8.0]


def test_a_short_pause_inside_a_recognised_word_gives_way_to_the_next_longest():
    regions = [(1.0, 4.0), (4.1, 7.0), (7.2, 10.0), (10.15, 13.0)]  # the 0.2 s pause is the longest
    assert [c.speech_end for c in _plan(regions)] == [7.0, 13.0]
    clips = plan_clips(regions, 20.0, CFG, words_near=_words((6.9, 7.3)))
    assert [(c.speech_start, c.speech_end) for c in clips] == [(1.0, 10.0), (10.15, 13.0)]


def test_a_cut_whose_edge_falls_in_a_word_moves_to_the_word_free_part_of_its_pause():
    # the ASR gives most of the 0.2 s pause to the word before it: the edge goes to that word's end
    regions = [(1.0, 7.0), (7.2, 15.0)]
    clips = plan_clips(regions, 20.0, CFG, words_near=_words((6.5, 7.15), (7.2, 7.6)))
    assert clips[0].end == clips[1].start == pytest.approx(7.15 - CFG.word_margin_s)
    assert plan_clips(regions, 20.0, CFG)[0].end == pytest.approx(7.075)  # unchecked: 3/8 of the pause


def test_asr_words_decodes_only_around_the_times_asked_and_reuses_a_window():
    calls = []

    def recognise(wav):  # one 0.2 s "word" every 0.5 s of whatever it is given
        calls.append(len(wav))
        return [("w", t, t + 0.2) for t in np.arange(0.0, len(wav) / 16000 - 0.2, 0.5)]

    words = AsrWords(np.zeros(16000 * 60, np.float32), recognise, 16000, window_s=3.0)
    assert words.decoded_s == 0.0 and calls == []
    assert (30.1, 30.3) in [(round(a, 3), round(b, 3)) for a, b in words(30.1)]  # in file time
    words(30.3)  # inside the trusted middle of the first window
    assert len(calls) == 1 and words.decoded_s == 3.0
    words(0.05)  # a file edge: the window starts at 0 and is trusted up to it
    assert len(calls) == 2 and words(0.0) and len(calls) == 2
    with pytest.raises(ValueError, match="window_s"):
        AsrWords(np.zeros(10, np.float32), recognise, window_s=0)
