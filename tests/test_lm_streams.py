"""Stream layouts: every layout round-trips, switches and delays sit where they should, the LM
consumes the frames, bad inputs are refused with a clear message."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxlm.lm.model import LM, TEXT_EOW_ID, TEXT_PAD_ID, lm_config, lm_loss
from voxlm.lm.streams import (FRAME_RATE, SPEECH, TEXT, TEXT_OFFSET, InterleaveOptions, Segment,
                              aligned, channel_words, continuation, duplex, from_aligned,
                              from_continuation, from_duplex, from_interleave, interleave,
                              interleave_segments, sample_modalities, text_card, tokenize_words,
                              word_cuts)

torch.set_num_threads(1)

# a corpus item's word timings (data/corpus, flite:kal): overlaps ("I" and "imagine") included
WORDS = [{"w": "No", "start": 0.0, "end": 0.1}, {"w": "personal", "start": 0.1, "end": 0.78},
         {"w": "experience", "start": 0.78, "end": 1.49}, {"w": "here", "start": 1.49, "end": 1.78},
         {"w": "but", "start": 1.97, "end": 2.15}, {"w": "I've", "start": 2.15, "end": 2.34},
         {"w": "heard", "start": 2.35, "end": 2.52}, {"w": "that", "start": 2.52, "end": 2.63},
         {"w": "too", "start": 2.71, "end": 2.91}, {"w": "I", "start": 3.1, "end": 3.11},
         {"w": "imagine", "start": 3.1, "end": 3.57}, {"w": "it", "start": 3.57, "end": 3.75},
         {"w": "is", "start": 3.75, "end": 3.87}, {"w": "true", "start": 3.92, "end": 4.18}]
DURATION = 4.4  # seconds
SPARSE = [{"w": "Can", "start": 0.1, "end": 0.25}, {"w": "count", "start": 0.8, "end": 1.1},
          {"w": "nine", "start": 2.0, "end": 2.4}]  # a frame or more between words


def config(**changes):
    return replace(lm_config("tiny"), context=128, **changes)  # n_q 3, card 64, text_card 40


def codes_for(c, seconds=DURATION, k=4, seed=0):
    frames = math.ceil(seconds * FRAME_RATE)
    return np.random.default_rng(seed).integers(0, c.card, (k, frames))  # [K, T]


def tokens_for(words, c, seed=0):
    """1 to 3 tokenizer ids per word, inside the tiny text vocabulary."""
    rng = np.random.default_rng(seed)
    return [list(rng.integers(0, c.text_card - TEXT_OFFSET, rng.integers(1, 4))) for _ in words]


def start_frame(c):
    return [c.text_start_id] + [c.audio_pad_id] * (c.n_streams - 1)


def test_constants_match_codec_and_model():
    from voxlm.codec.model import CodecConfig

    assert FRAME_RATE == CodecConfig().frame_rate == 12.5
    assert (TEXT_PAD_ID, TEXT_EOW_ID, TEXT_OFFSET) == (0, 1, 2)
    assert text_card(262144) == 262146


@pytest.mark.parametrize("delay,user", [(0, True), (1, True), (2, False)])
def test_continuation_round_trip_and_layout(delay, user):
    c = config(acoustic_delay=delay, user_audio=user)
    codes = codes_for(c)  # [4, 55]: one codebook more than the LM models
    n = codes.shape[1]
    frames = continuation(codes, c)
    assert frames.shape == (c.n_streams, 1 + n + delay) and frames.dtype == np.int64
    assert list(frames[:, 0]) == start_frame(c)
    assert (frames[0] == c.text_start_id).all()  # no text stream in speech-only data
    assert (frames[1 + c.n_q:] == c.audio_pad_id).all()  # no user audio
    assert np.array_equal(frames[1, 1:1 + n], codes[0])  # codebook 1 undelayed
    for k in range(1, c.n_q):  # the others `delay` frames later, pad before
        assert np.array_equal(frames[1 + k, 1 + delay:1 + delay + n], codes[k])
        assert (frames[1 + k, :1 + delay] == c.audio_pad_id).all()
    assert np.array_equal(from_continuation(frames, c), codes[:c.n_q])
    # a generated stream that stops mid-way loses only its incomplete last frames
    assert np.array_equal(from_continuation(frames[:, :-1], c), codes[:c.n_q, :n - 1])


def test_word_cuts_fall_between_words():
    n = math.ceil(DURATION * FRAME_RATE)
    cuts = word_cuts(WORDS, n)
    assert cuts[0] == 0 and cuts[-1] == n and (np.diff(cuts) >= 0).all()
    for i in range(1, len(WORDS)):
        middle = (WORDS[i - 1]["end"] + WORDS[i]["start"]) / 2
        assert abs(cuts[i] / FRAME_RATE - middle) <= 0.5 / FRAME_RATE + 1e-9
    # a 0.4 s pause: the cut lands inside it, so "here" and "but" keep their audio
    assert WORDS[3]["end"] * FRAME_RATE <= cuts[4] <= WORDS[4]["start"] * FRAME_RATE


def test_interleave_switches_at_word_boundaries_and_round_trips():
    c = config(acoustic_delay=2)
    codes, tokens = codes_for(c), tokens_for(WORDS, c)
    kinds = [SPEECH] * 2 + [TEXT] * 3 + [SPEECH] * 4 + [TEXT] * 2 + [SPEECH] * 3
    segments = interleave_segments(codes, WORDS, tokens, kinds, c)
    cuts = word_cuts(WORDS, codes.shape[1])
    assert [s.kind for s in segments] == [SPEECH, TEXT, SPEECH, TEXT, SPEECH]
    assert np.array_equal(segments[0].codes, codes[:3, :cuts[2]])  # words 0-1 and the lead-in
    assert segments[1].tokens == tuple(sum(tokens[2:5], []))  # words 2-4 as text
    assert np.array_equal(segments[2].codes, codes[:3, cuts[5]:cuts[9]])
    assert segments[3].tokens == tuple(sum(tokens[9:11], []))
    assert np.array_equal(segments[4].codes, codes[:3, cuts[11]:])  # to the end of the audio

    frames = interleave(segments, c)
    d = c.acoustic_delay
    sizes = [s.codes.shape[1] + d if s.kind == SPEECH else len(s.tokens) for s in segments]
    assert frames.shape == (c.n_streams, 1 + sum(sizes))
    column = 1
    for seg, size in zip(segments, sizes):  # each switch sits where the previous span ends
        text, cb1 = frames[0, column:column + size], frames[1, column:column + size]
        if seg.kind == TEXT:
            assert np.array_equal(text, np.array(seg.tokens) + TEXT_OFFSET)
            assert (frames[1:, column:column + size] == c.audio_pad_id).all()
        else:
            assert (text == TEXT_PAD_ID).all()
            assert np.array_equal(cb1[:size - d], seg.codes[0])
            assert (cb1[size - d:] == c.audio_pad_id).all()  # the delayed codebooks' tail
            assert np.array_equal(frames[2, column + d:column + size], seg.codes[1])
        column += size
    back = from_interleave(frames, c)
    assert [s.kind for s in back] == [s.kind for s in segments]
    for a, b in zip(back, segments):
        assert a.tokens == b.tokens
        assert (a.codes is None) == (b.codes is None)
        assert a.codes is None or np.array_equal(a.codes, b.codes)


def test_interleave_one_modality_and_empty_spans():
    c = config()
    codes, tokens = codes_for(c), tokens_for(WORDS, c)
    (speech,) = interleave_segments(codes, WORDS, tokens, [SPEECH] * len(WORDS), c)
    assert np.array_equal(speech.codes, codes[:3])  # every frame, silences included
    (text,) = interleave_segments(codes, WORDS, tokens, [TEXT] * len(WORDS), c)
    assert text.tokens == tuple(sum(tokens, []))
    # a word that owns no frame: as speech between two text words it vanishes, and the text
    # around it joins into one segment
    words = [{"w": "a", "start": 0.0, "end": 0.5}, {"w": "b", "start": 0.5, "end": 0.5},
             {"w": "c", "start": 0.5, "end": 1.0}, {"w": "d", "start": 1.2, "end": 1.5}]
    assert list(word_cuts(words, 25)) == [0, 6, 6, 14, 25]
    kinds = [TEXT, SPEECH, TEXT, SPEECH]
    segments = interleave_segments(codes[:, :25], words, tokens[:4], kinds, c)
    assert [s.kind for s in segments] == [TEXT, SPEECH]
    assert segments[0].tokens == tuple(tokens[0] + tokens[2])
    assert np.array_equal(segments[1].codes, codes[:3, 14:25])


def test_sample_modalities_alternates_in_spans():
    options = InterleaveOptions(min_words=2, max_words=4)
    kinds = sample_modalities(200, np.random.default_rng(0), options)
    assert kinds == sample_modalities(200, np.random.default_rng(0), options)
    assert len(kinds) == 200 and set(kinds) == {TEXT, SPEECH}
    spans = [len(list(g)) for g in _groups(kinds)]
    assert all(2 <= n <= 4 for n in spans[:-1]) and 1 <= spans[-1] <= 4
    firsts = {sample_modalities(3, np.random.default_rng(s))[0] for s in range(20)}
    assert firsts == {TEXT, SPEECH}
    assert sample_modalities(5, np.random.default_rng(0), InterleaveOptions(speech_first=1.0))[0] \
        == SPEECH


def _groups(kinds):
    from itertools import groupby

    return (list(g) for _, g in groupby(kinds))


@pytest.mark.parametrize("text_delay", [-3, 0, 2])
def test_aligned_round_trip_and_delay(text_delay):
    c = config()
    codes, tokens = codes_for(c, 3.0), tokens_for(SPARSE, c)
    n, d = codes.shape[1], c.acoustic_delay
    frames = aligned(codes, SPARSE, tokens, c, text_delay=text_delay)
    assert frames.shape == (c.n_streams, 1 + n + abs(text_delay) + d)
    assert list(frames[:, 0]) == start_frame(c)
    text_at, audio_at = 1 + max(text_delay, 0), 1 + max(-text_delay, 0)
    assert np.array_equal(frames[1, audio_at:audio_at + n], codes[0])  # audio shifted
    assert (frames[1, :audio_at] == c.audio_pad_id).all()
    targets = [math.floor(w["start"] * FRAME_RATE) for w in SPARSE]
    for target, ids in zip(targets, tokens):  # each word at its start frame, EOW just before
        column = text_at + target
        assert frames[0, column - 1] == TEXT_EOW_ID
        assert np.array_equal(frames[0, column:column + len(ids)], np.array(ids) + TEXT_OFFSET)
        # the word's first token and its first audio frame are text_delay columns apart
        assert column - (audio_at + target) == text_delay
    n_text = sum(len(t) for t in tokens)
    assert (frames[0, 1:] == TEXT_PAD_ID).sum() == frames.shape[1] - 1 - n_text - len(SPARSE)
    assert (frames[1 + c.n_q:] == c.audio_pad_id).all()  # no user audio in this layout
    back = from_aligned(frames, c, text_delay=text_delay)
    assert np.array_equal(back.codes, codes[:c.n_q])
    assert back.words == [[int(t) for t in ids] for ids in tokens]
    assert back.word_frames == targets and back.user_codes is None


def test_aligned_crowded_words_are_pushed_in_order():
    c = config()
    codes = codes_for(c)
    tokens = [[5, 6, 7, 8]] * len(WORDS)  # more tokens than frames per word
    frames = aligned(codes, WORDS, tokens, c)
    back = from_aligned(frames, c)
    assert back.words == tokens and np.array_equal(back.codes, codes[:3])
    targets = [math.floor(w["start"] * FRAME_RATE) for w in WORDS]
    assert all(f >= t for f, t in zip(back.word_frames, targets))
    assert back.word_frames[0] == 1  # frame 0 is taken by the first word's EOW
    gaps = np.diff(back.word_frames)
    assert (gaps >= 5).all()  # 4 tokens and an EOW between consecutive word starts
    for f in back.word_frames:
        assert frames[0, 1 + f - 1] == TEXT_EOW_ID
    assert frames.shape[1] > 1 + codes.shape[1] + 1  # text overflow extends the frames


def test_duplex_round_trip():
    c = config(acoustic_delay=2)
    user, model = codes_for(c, seed=1), codes_for(c, seed=2)
    row = {"words": [dict(w, channel=1) for w in SPARSE] + [dict(WORDS[0], channel=0)]}
    words = channel_words(row, 1)
    assert [w["w"] for w in words] == ["Can", "count", "nine"]
    tokens = tokens_for(words, c)
    for text_delay in (0, -2):
        frames = duplex(user, model, words, tokens, c, text_delay=text_delay)
        at = 1 + max(-text_delay, 0)
        assert np.array_equal(frames[1 + c.n_q, at:at + user.shape[1]], user[0])
        assert np.array_equal(frames[2 + c.n_q, at + 2:at + 2 + user.shape[1]], user[1])
        back = from_duplex(frames, c, text_delay=text_delay)
        assert np.array_equal(back.user_codes, user[:3]) and np.array_equal(back.codes, model[:3])
        assert back.words == [[int(t) for t in ids] for ids in tokens]
        assert back.word_frames == [math.floor(w["start"] * FRAME_RATE) for w in words]


def test_lm_consumes_every_layout():
    c = config()
    torch.manual_seed(0)
    lm = LM(c).eval()
    codes, tokens = codes_for(c, 2.5), tokens_for(SPARSE, c)
    kinds = [SPEECH, TEXT, SPEECH]
    layouts = {
        "continuation": continuation(codes, c),
        "interleave": interleave(interleave_segments(codes, SPARSE, tokens, kinds, c), c),
        "aligned": aligned(codes, SPARSE, tokens, c, text_delay=-2),
        "duplex": duplex(codes_for(c, 2.5, seed=3), codes, SPARSE, tokens, c),
    }
    for name, frames in layouts.items():
        batch = torch.from_numpy(frames)[None]  # [1, S, L]
        losses = lm_loss(lm(batch), batch)
        assert torch.isfinite(losses["total"]), name
        if name != "continuation":  # text targets exist, and none is a "not started" id
            assert losses["text"] > 0, name
        assert (frames[0, 1:] < c.text_start_id).all() or name == "continuation"


def test_real_tokenizer_words_round_trip(tmp_path):
    from voxlm.lm.tokenizer import train_tokenizer

    sentences = [" ".join(w["w"] for w in WORDS), "Can you count from three to nine?"]
    tok = train_tokenizer(sentences * 20, 300, tmp_path / "tok.model")
    c = config(text_card=text_card(tok.vocab_size))
    tokens = tokenize_words(WORDS, tok)
    back = from_aligned(aligned(codes_for(c), WORDS, tokens, c, text_delay=1), c, text_delay=1)
    assert tok.decode(sum(back.words, [])) == sentences[0]
    assert [tok.decode(ids).strip() for ids in back.words] == [w["w"] for w in WORDS]


def test_bad_inputs_are_refused_clearly():
    c = config()
    codes, tokens = codes_for(c), tokens_for(WORDS, c)
    with pytest.raises(ValueError, match=r"\[K, T\] with K >= n_q = 3"):
        continuation(codes[0], c)
    with pytest.raises(ValueError, match=r"\[K, T\] with K >= n_q = 3"):
        continuation(codes[:2], c)
    with pytest.raises(ValueError, match="outside 0..63"):
        continuation(codes + c.card, c)
    with pytest.raises(ValueError, match="integer codes"):
        continuation(codes.astype(np.float32), c)
    with pytest.raises(ValueError, match="start frame"):
        from_continuation(continuation(codes, c)[:, 1:], c)
    with pytest.raises(ValueError, match=r"frames must be \[S = 7"):
        from_aligned(continuation(codes, c)[:4], c)
    swapped = [WORDS[1], WORDS[0]] + WORDS[2:]
    with pytest.raises(ValueError, match="'No'.*before word 0.*time order"):
        aligned(codes, swapped, tokens, c)
    late = WORDS[:-1] + [dict(WORDS[-1], start=9.0, end=9.5)]
    with pytest.raises(ValueError, match=r"word 13 \('true'\) starts at 9.0 s, after the audio"):
        aligned(codes, late, tokens, c)
    with pytest.raises(ValueError, match="0 <= start <= end"):
        aligned(codes, [dict(WORDS[0], end=-1.0)], tokens[:1], c)
    with pytest.raises(ValueError, match="start and end"):
        aligned(codes, [{"w": "x"}], tokens[:1], c)
    with pytest.raises(ValueError, match="one token list per word: 14 words, 13"):
        aligned(codes, WORDS, tokens[:-1], c)
    with pytest.raises(ValueError, match=r"word 2 has token ids \[38\] outside 0..37.*text_card"):
        aligned(codes, WORDS, tokens[:2] + [[38]] + tokens[3:], c)
    with pytest.raises(ValueError, match="word 0 has no tokens"):
        aligned(codes, WORDS, [[]] + tokens[1:], c)
    with pytest.raises(ValueError, match="one of 'text'/'speech' per word"):
        interleave_segments(codes, WORDS, tokens, ["audio"] * len(WORDS), c)
    with pytest.raises(ValueError, match="must alternate"):
        interleave([Segment(TEXT, (1,)), Segment(TEXT, (2,))], c)
    with pytest.raises(ValueError, match="speech with no frames"):
        interleave([Segment(SPEECH, codes=codes[:, :0])], c)
    with pytest.raises(ValueError, match="segment 0 has token ids"):
        interleave([Segment(TEXT, (99,))], c)
    solo = config(user_audio=False)
    with pytest.raises(ValueError, match="needs a user audio stream"):
        duplex(codes, codes, WORDS, tokens, solo)
    with pytest.raises(ValueError, match="same length"):
        duplex(codes[:, :-1], codes, WORDS, tokens, c)
