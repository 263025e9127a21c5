"""Real synthesis with every engine on tiny texts; word timings checked against the audio."""
import numpy as np
import pytest

from conftest import SR, pauses
from voxlm.errors import VoxlmError
from voxlm.synth import engines as E

ALL = E.TRAINING_ENGINES + E.HELD_OUT_ENGINES


@pytest.mark.parametrize("name", ALL)
def test_engine_speaks_with_word_timings(name, engines):
    engine = engines(name)
    voice = engine.voices()[0]
    speech = engine.speak("Seven plus five is twelve.", voice)
    audio = speech.audio
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    assert 0.8 < speech.duration < 6.0
    assert [w.w for w in speech.words] == ["Seven", "plus", "five", "is", "twelve"]
    starts = [w.start for w in speech.words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start < w.end <= speech.duration + 1e-3 for w in speech.words)
    # the first word starts after the kept edge silence, the last ends before the trailing one
    assert abs(speech.words[0].start - E.EDGE_SILENCE) < 0.03
    assert abs(speech.duration - speech.words[-1].end - E.EDGE_SILENCE) < 0.03
    # every word covers speech: its loudest 20 ms is well above the edge silence
    for w in speech.words:
        seg = audio[int(w.start * SR): int(w.end * SR)]
        assert np.sqrt(np.mean(seg ** 2)) > 10 * (np.sqrt(np.mean(audio[: int(0.05 * SR)] ** 2)) + 1e-4)


@pytest.mark.parametrize("name", ALL)
def test_word_boundaries_fall_on_forced_pauses(name, engines):
    """Words spoken with sentence pauses: each pause is closed by a word end and opened by a word
    start, within 50 ms."""
    engine = engines(name)
    speech = engine.speak("Seven. Yellow. Bright morning. Seventeen. Window.", engine.voices()[0],
                          rate=0.8)
    gaps = pauses(speech.audio)
    assert len(gaps) >= 2, f"{name}: expected sentence pauses, found {gaps}"
    for a, b in gaps:
        assert min(abs(w.end - a) for w in speech.words) < 0.05, (name, a, speech.words)
        assert min(abs(w.start - b) for w in speech.words) < 0.05, (name, b, speech.words)


def test_espeak_voices_differ_and_rate_changes_duration(engines):
    engine = engines("espeak")
    a = engine.speak("The weather is lovely today.", "espeak:en-us+m1")
    b = engine.speak("The weather is lovely today.", "espeak:en-us+f2")
    slow = engine.speak("The weather is lovely today.", "espeak:en-us+m1", rate=0.7)
    assert slow.duration > a.duration * 1.2
    n = min(len(a.audio), len(b.audio))
    assert not np.allclose(a.audio[:n], b.audio[:n], atol=1e-3)


def test_kokoro_mixed_voice_is_a_new_speaker(engines):
    engine = engines("kokoro")
    mix = engine.style("jf_alpha*0.5+jm_kumo*0.5")
    assert np.allclose(mix, 0.5 * engine.style("jf_alpha") + 0.5 * engine.style("jm_kumo"))
    speech = engine.speak("Good morning.", "kokoro:jf_alpha*0.5+jm_kumo*0.5")
    assert speech.voice.id == "kokoro:jf_alpha*0.5+jm_kumo*0.5" and speech.duration > 0.4


def test_alignment_matches_exact_espeak_timings():
    """DTW transfer from one eSpeak voice to another reproduces the target's own timings."""
    from voxlm.synth import align

    text = "What is seven plus five? Seven plus five is twelve."
    ref, ref_words = E.espeak_speech(text, "en-us")
    target, truth = E.espeak_speech(text, "en-gb-scotland+m4", rate=1.2)
    got = align.transfer_timings(ref, ref_words, target)
    errors = [abs(g.start - t.start) for g, t in zip(got, truth)] + \
             [abs(g.end - t.end) for g, t in zip(got, truth)]
    assert np.mean(errors) < 0.03 and np.mean(np.array(errors) < 0.05) > 0.9


def test_dtw_path_is_monotonic_and_optimal_on_a_toy_case():
    from voxlm.synth.align import dtw_path

    cost = np.ones((4, 4))
    cost[np.arange(4), np.arange(4)] = 0
    i, j = dtw_path(cost)
    assert list(i) == [0, 1, 2, 3] and list(j) == [0, 1, 2, 3]
    cost = np.array([[0, 0, 1], [1, 1, 0]], float)
    i, j = dtw_path(cost)
    assert list(zip(i, j)) == [(0, 0), (0, 1), (1, 2)]


@pytest.mark.parametrize("bad", ["", "   ", "...", "?!"])
def test_text_that_cannot_be_spoken_is_a_clear_error(bad, engines):
    with pytest.raises(VoxlmError, match="no words to speak"):
        engines("espeak").speak(bad)


def test_unknown_voices_and_engines_are_clear_errors(engines):
    with pytest.raises(VoxlmError, match="unknown voice"):
        E.parse_voice("nosuch:thing")
    with pytest.raises(VoxlmError, match="unknown engine"):
        E.get_engine("nosuch")
    with pytest.raises(VoxlmError, match="no voice"):
        engines("espeak").speak("hello", "espeak:xx-nonexistent")
    with pytest.raises(VoxlmError, match="kokoro has no voice"):
        engines("kokoro").speak("hello", "kokoro:nobody")
    with pytest.raises(VoxlmError, match="belongs to engine"):
        engines("flite").speak("hello", "espeak:en-us+m1")
