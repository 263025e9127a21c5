"""Turn-taking statistics on synthetic stereo signals with known IPUs, pauses, gaps, overlaps."""
from __future__ import annotations

import numpy as np
import pytest

from voxlm.audio import SAMPLE_RATE, save_audio
from voxlm.errors import VoxlmError
from voxlm.turntaking import compare_to_reference, dialogue_stats, format_stats, turn_events

TOL = 0.02  # s

# (channel, start_s, end_s) noise bursts; ch0 has a 100 ms hole inside [4.8, 6.0] that the
# 200 ms bridging must close, and ch1 has a 20 ms click that is too short to be an IPU
BURSTS = [(0, 0.5, 2.0), (0, 2.5, 3.0), (1, 3.3, 5.0), (0, 4.8, 5.5), (0, 5.6, 6.0),
          (1, 5.25, 5.6), (1, 6.3, 7.0), (1, 7.5, 7.52)]
DURATION = 8.0  # s


def _stereo(bursts=BURSTS, duration=DURATION, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    stereo = np.zeros((int(duration * SAMPLE_RATE), 2), np.float32)  # [T, 2]
    for c, s, e in bursts:
        a, b = int((s + offset) * SAMPLE_RATE), int((e + offset) * SAMPLE_RATE)
        stereo[a:b, c] = rng.uniform(-0.3, 0.3, b - a)
    return stereo


def _spans(events, kind):
    return [(e.channel, e.start, e.end) for e in events if e.kind == kind]


def _close(got, want):
    assert len(got) == len(want), (got, want)
    for g, w in zip(sorted(got), sorted(want)):
        assert g[0] == w[0], (got, want)
        assert abs(g[1] - w[1]) <= TOL and abs(g[2] - w[2]) <= TOL, (got, want)


@pytest.mark.parametrize("offset", [0.0, 0.0037])  # on and off the 10 ms frame grid
def test_events_match_known_timeline(offset):
    events = turn_events(_stereo(offset=offset))
    o = offset
    _close(_spans(events, "ipu"), [(0, 0.5 + o, 2.0 + o), (0, 2.5 + o, 3.0 + o), (0, 4.8 + o, 6.0 + o),
                                   (1, 3.3 + o, 5.0 + o), (1, 5.25 + o, 5.6 + o), (1, 6.3 + o, 7.0 + o)])
    _close(_spans(events, "pause"), [(0, 2.0 + o, 2.5 + o)])
    _close(_spans(events, "gap"), [(1, 3.0 + o, 3.3 + o), (1, 6.0 + o, 6.3 + o)])
    # the first overlap hands the floor to channel 0; the second is a backchannel (-1)
    _close(_spans(events, "overlap"), [(0, 4.8 + o, 5.0 + o), (-1, 5.25 + o, 5.6 + o)])
    _close(_spans(events, "backchannel"), [(1, 5.25 + o, 5.6 + o)])


def test_stats_counts_durations_and_mode(tmp_path):
    stereo = _stereo()
    path = save_audio(tmp_path / "d.wav", stereo)
    rows = [{"turns": [{"kind": "turn"}, {"kind": "backchannel"}]}]
    stats = dialogue_stats([path], rows=rows)  # from a file, as for model output
    minutes = DURATION / 60
    assert stats.dialogues == 1 and abs(stats.minutes - minutes) < 1e-6
    assert (stats.ipu.count, stats.pause.count, stats.gap.count, stats.overlap.count) == (6, 1, 2, 2)
    assert abs(stats.gap.per_min - 2 / minutes) < 1e-6
    assert abs(stats.pause.mean_s - 0.5) <= TOL
    assert abs(stats.gap.total_s - 0.6) <= TOL and abs(stats.gap.median_s - 0.3) <= TOL
    assert abs(stats.overlap.total_s - 0.55) <= TOL
    assert abs(stats.ipu.total_s - (1.5 + 0.5 + 1.2 + 1.7 + 0.35 + 0.7)) <= TOL
    assert abs(stats.gap_mode_s - 0.3) < 0.006  # the gaps' density peaks at their 300 ms
    assert abs(stats.overlap_transition_share - 1 / 3) < 1e-9
    assert abs(stats.backchannels_per_min - 1 / minutes) < 1e-6
    assert abs(stats.backchannels_per_min_manifest - 1 / minutes) < 1e-6
    # the array path gives the same numbers
    assert dialogue_stats(stereo).gap == stats.gap


def test_report_flags_ratio_against_reference():
    stats = dialogue_stats([_stereo(), _stereo(seed=1)])
    rows = {r["metric"]: r for r in compare_to_reference(stats)}
    assert abs(rows["gap_mode_s"]["ratio"] - stats.gap_mode_s / 0.2) < 1e-6 and rows["gap_mode_s"]["within_2x"]
    assert set(rows["gap_mode_s"]) >= {"ours", "reference", "ratio", "within_2x", "source"}
    text = format_stats(stats)
    assert "| gap | 4 |" in text and "Stivers" in text and "| pause |" in text


def test_silent_channel_and_bad_shape():
    stereo = _stereo(bursts=[(0, 0.5, 1.0), (0, 1.5, 2.0)], duration=3.0)
    events = turn_events(stereo)
    assert [e.kind for e in events if e.kind != "ipu"] == ["pause"]
    assert all(e.channel == 0 for e in events)
    with pytest.raises(VoxlmError, match="stereo"):
        turn_events(np.zeros(100, np.float32))
