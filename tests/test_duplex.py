"""The full-duplex runtime (voxlm/dialogue.py) and `voxlm chat` (voxlm/chat.py) on tiny random
models: frame timing per acoustic and text delay, stereo alignment, batched sessions against solo
runs, inner text decoding, latency accounting, model loading and the command's bad inputs
(the rows of docs/RELIABILITY.md's dialogue table)."""
import json
import socket
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from duplex_helpers import HOP, count_int8_quantizations, export_run, speech, tiny_model, tokenizer
from voxlm.chat import ChatOptions, chat
from voxlm.cli import main
from voxlm.dialogue import (DuplexRuntime, LatencyStats, SessionsFull, TextDecoder, Word,
                            default_dialogue_path, load_dialogue_model)
from voxlm.errors import VoxlmError
from voxlm.lm.generate import GREEDY
from voxlm.lm.model import TEXT_EOW_ID, TEXT_PAD_ID
from voxlm.lm.streams import TEXT_OFFSET

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("duplex")


@pytest.fixture(scope="module")
def runs(folder):
    return {"duplex": export_run(folder, "duplex"), "aligned": export_run(folder, "aligned")}


# ---------------------------------------------------------------- timing and alignment

@pytest.mark.parametrize("acoustic_delay,text_delay", [(1, 0), (2, 0), (1, -2), (1, 3)])
def test_frame_timing(folder, acoustic_delay, text_delay):
    """Warm-up steps take no input and give silence; then every step takes the user's frame t
    and gives the model's frame t + 1 - D, 1280 samples each."""
    model = tiny_model(folder, acoustic_delay=acoustic_delay, text_delay=text_delay)
    warmup = model.audio_at  # 1 + max(-text_delay, 0)
    with DuplexRuntime(model, 2) as runtime:
        session = runtime.open()
        session.feed(speech(1.0))
        for step in range(16):
            out = runtime.step()[session.id]
            assert out.audio.shape == (HOP,) and out.audio.dtype == np.float32
            assert out.column == step + 1 and out.tokens.shape == (1 + model.lm.config.n_q,)
            if step < warmup:
                assert out.user_frame is None and out.model_frame is None
                assert not out.audio.any()
                continue
            assert out.user_frame == step - warmup
            expected = out.user_frame + 1 - acoustic_delay
            assert out.model_frame == (expected if expected >= 0 else None)
        assert runtime.latency.count == 16


@pytest.mark.parametrize("acoustic_delay", [1, 2])
def test_a_voice_decoder_speaks_as_soon_as_codebook_1_is_sampled(folder, acoustic_delay):
    """A decoder that reads codebook 1 alone (S = 0) gets the model's frame t + 1 from the step
    that takes the user's frame t, whatever the acoustic delay D: the same tokens as with the
    codec's own decoder, D frames sooner, decoded from codebook 1 of those tokens."""
    from voxlm.codec.model import Codec
    from voxlm.dialogue import DialogueModel

    plain = tiny_model(folder, acoustic_delay=acoustic_delay)
    voice_codec = Codec(replace(plain.codec.config, decoder_codebooks=1)).eval()
    voice_codec.load_state_dict(plain.codec.state_dict())
    voice = DialogueModel(plain.lm, voice_codec, plain.tokenizer, text_delay=0, listen_delay=2)
    runs = {}
    for name, model in (("plain", plain), ("voice", voice)):
        torch.manual_seed(2)
        with DuplexRuntime(model, 1) as runtime:
            session = runtime.open()
            session.feed(speech(1.0))
            runs[name] = [runtime.step()[session.id] for _ in range(14)]
    assert [o.tokens.tolist() for o in runs["plain"]] == [o.tokens.tolist() for o in runs["voice"]]
    for out in runs["voice"]:
        if out.user_frame is not None:
            assert out.model_frame == out.user_frame + 1
    for out in runs["plain"]:
        if out.user_frame is not None and out.model_frame is not None:
            assert out.model_frame == out.user_frame + 1 - acoustic_delay
    # frame j's codebook 1 was sampled at column audio_at + j: the step with that column
    codes = {o.model_frame: int(o.tokens[1]) for o in runs["voice"] if o.model_frame is not None}
    assert all(codes[o.column - voice.audio_at] == int(o.tokens[1])
               for o in runs["voice"] if o.column - voice.audio_at in codes)
    with voice_codec.streaming(1):
        expected = [voice_codec.decode(torch.tensor([[[codes[j]]]]))[0, 0].numpy()
                    for j in sorted(codes)]
    got = [o.audio for o in sorted((o for o in runs["voice"] if o.model_frame is not None),
                                   key=lambda o: o.model_frame)]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(expected))


def test_chat_stereo_is_sample_aligned(folder):
    """Channel 0 is the input, padded to whole frames; channel 1 holds the model's frame j at
    sample j * 1280, the frames the runtime gives one by one."""
    model = tiny_model(folder)
    audio = speech(1.3)  # not a whole number of frames
    result = chat(model, audio, ChatOptions(answer_wait=0.0), seed=4)
    frames = -(-audio.size // HOP)
    assert result.audio.shape == (frames * HOP, 2) and result.frames == frames
    np.testing.assert_array_equal(result.audio[:audio.size, 0], audio)
    assert not result.audio[audio.size:, 0].any()
    torch.manual_seed(4)
    voice = {}
    with DuplexRuntime(model, 1) as runtime:
        session = runtime.open()
        session.feed(np.pad(audio, (0, frames * HOP - audio.size)))
        while len(voice) < frames:
            out = runtime.step()[session.id]
            if out.model_frame is not None:
                voice[out.model_frame] = out.audio
    np.testing.assert_array_equal(result.audio[:, 1], np.concatenate([voice[j] for j in range(frames)]))
    assert np.abs(result.audio[:, 1]).max() > 0
    assert result.latency["step"]["mean_ms"] > 0 and result.latency["steps"] == frames + 1


def test_chat_limits(folder):
    model = tiny_model(folder)
    audio = speech(1.0)
    # a talkative random model: it never falls silent, so the limit ends the dialogue
    assert chat(model, audio, ChatOptions(max_seconds=2.0), seed=0).frames == 25
    assert chat(model, audio, ChatOptions(max_seconds=0.4), seed=0).audio.shape == (5 * HOP, 2)
    # a model that says nothing (greedy on a zero text head: pads) and, at a +100 dB
    # threshold, is never loud: it stops answer_wait after the input
    quiet = tiny_model(folder, text_bias=False)
    with torch.no_grad():
        quiet.lm.text_head.weight.zero_()
    options = ChatOptions(answer_wait=1.0, silence_db=100.0, sampling=GREEDY)
    result = chat(quiet, audio, options)
    assert result.frames == 13 + round(12.5) and result.text == "" and result.words == []
    with pytest.raises(VoxlmError, match="shorter than one frame"):
        chat(model, audio, ChatOptions(max_seconds=0.01))
    with pytest.raises(VoxlmError, match="max-seconds"):
        chat(model, audio, ChatOptions(max_seconds=-1.0))


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize("context", [6, 64])  # the ring buffer wrapped, and not
def test_restart_rows_gives_a_fresh_stream(context):
    """A transformer row restarted mid-stream, frame by frame and in a chunk, equals that
    stream run alone; the other row goes on as if nothing happened."""
    from voxlm.modules.transformer import Transformer

    torch.manual_seed(0)
    net = Transformer(32, 2, 2, context, 2).eval()
    x = torch.randn(2, 20, 32)
    with torch.no_grad():
        with net.streaming(2):
            whole = torch.cat([net(x[:, t:t + 1]) for t in range(20)], 1)  # [2, 20, 32]
        with net.streaming(1):
            alone = torch.cat([net(x[1:, t:t + 1]) for t in range(12)], 1)
        with net.streaming(2):
            out = [net(x[:, t:t + 1]) for t in range(8)]
            net.restart_rows([1])
            restarted = x.clone()
            restarted[1, 8:] = x[1, :12]
            out += [net(restarted[:, t:t + 1]) for t in range(8, 15)]
            out.append(net(restarted[:, 15:20]))  # a chunk of 5 frames
        out = torch.cat(out, 1)
    torch.testing.assert_close(out[0], whole[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, 8:], alone[0], atol=1e-5, rtol=0)


def test_restart_rows_of_the_codec(folder):
    """Encoder rows restarted mid-stream give the codes of a fresh stream."""
    from duplex_helpers import tiny_codec

    codec = tiny_codec()
    a, b = speech(1.0, 1), speech(1.0, 2)
    frames = lambda audio: torch.from_numpy(audio[:12 * HOP]).view(12, 1, 1, HOP)  # noqa: E731
    with codec.streaming(1):
        fresh = [codec.encode(f) for f in frames(b)[:6]]
    with codec.streaming(2), torch.inference_mode():
        for f in frames(a)[:6]:
            codec.encode(f.expand(2, 1, HOP).contiguous())
        codec.encoder.restart_rows([1])
        both = [codec.encode(torch.cat([fa, fb])) for fa, fb in zip(frames(a)[6:], frames(b))]
    assert [c[1].tolist() for c in both] == [c[0].tolist() for c in fresh]


def _solo(model, audio, steps):
    with DuplexRuntime(model, 1, GREEDY) as runtime:
        session = runtime.open()
        session.feed(audio)
        return [runtime.step()[session.id] for _ in range(steps)]


def test_batched_sessions_equal_solo_runs(folder):
    """Greedy: sessions that share the batch, join late and take a row another left give the
    tokens they give alone. Audio: equal for a session that starts with the batch; a late one's
    noise phases follow the vocoder's counter, which the batch shares, so only its level is
    compared."""
    model = tiny_model(folder)
    inputs = {name: speech(1.2, seed) for seed, name in enumerate("abc")}
    steps = {"a": 10, "b": 14, "c": 12}
    solo = {name: _solo(model, inputs[name], steps[name]) for name in inputs}
    assert solo["a"][3].tokens.tolist() != solo["b"][3].tokens.tolist()  # inputs matter
    batched = {name: [] for name in inputs}
    opens = {0: "a", 3: "b", 12: "c"}  # step -> who joins; a leaves at 10, c takes its row
    sessions = {}
    with DuplexRuntime(model, 2, GREEDY) as runtime:
        for step in range(26):
            if step in opens:
                name = opens[step]
                sessions[name] = runtime.open()
                sessions[name].feed(inputs[name])
            out = runtime.step()
            for name, session in list(sessions.items()):
                batched[name].append(out[session.id])
                if len(batched[name]) == steps[name]:
                    runtime.close(sessions.pop(name))
        assert sessions == {} and runtime.sessions() == []
    for name in inputs:
        assert len(batched[name]) == steps[name]
        for mine, alone in zip(batched[name], solo[name]):
            np.testing.assert_array_equal(mine.tokens, alone.tokens)
            assert (mine.model_frame, mine.user_frame, mine.text) == \
                   (alone.model_frame, alone.user_frame, alone.text)
        mine, alone = (np.concatenate([o.audio for o in outs]) for outs in (batched[name], solo[name]))
        if name == "a":
            np.testing.assert_allclose(mine, alone, atol=2e-4)  # float rounding
        level = np.sqrt(np.mean(mine ** 2)) / np.sqrt(np.mean(alone ** 2))
        assert 0.8 < level < 1.25, (name, level)


def test_sessions_are_independent(folder):
    """What one session hears changes nothing in another's output."""
    model = tiny_model(folder)
    runs = []
    for other in (speech(1.0, 7), np.zeros(16000, np.float32)):
        with DuplexRuntime(model, 2, GREEDY) as runtime:
            mine, theirs = runtime.open(), runtime.open()
            mine.feed(speech(1.0, 1))
            theirs.feed(other)
            runs.append([runtime.step() for _ in range(10)])
    first, second = ([out[mine.id] for out in run] for run in runs)
    assert [o.tokens.tolist() for o in first] == [o.tokens.tolist() for o in second]
    np.testing.assert_allclose(np.concatenate([o.audio for o in first]),
                               np.concatenate([o.audio for o in second]), atol=1e-6)
    assert [o.tokens.tolist() for o in (r[theirs.id] for r in runs[0])] != \
           [o.tokens.tolist() for o in (r[theirs.id] for r in runs[1])]


def test_idle_rows_restart_and_int8(folder, monkeypatch):
    """Rows no session holds restart now and then (their positions stay small) without
    disturbing the others; int8 weights run the same loop."""
    import voxlm.dialogue

    model = tiny_model(folder)
    audio = speech(3.0)
    alone = _solo(model, audio, 40)
    monkeypatch.setattr(voxlm.dialogue, "RESTART_IDLE_EVERY", 5)
    with DuplexRuntime(model, 3, GREEDY) as runtime:
        session = runtime.open()
        session.feed(audio)
        outs = [runtime.step()[session.id] for _ in range(40)]
        attention = runtime.gen.lm.temporal.blocks[0].attn
        assert attention.state.offset == 40 and min(attention.state.row_starts[1:]) >= 35
    assert [o.tokens.tolist() for o in outs] == [o.tokens.tolist() for o in alone]
    with DuplexRuntime(model, 2, GREEDY, int8=True) as runtime:
        session = runtime.open()
        session.feed(audio)
        outs = [runtime.step()[session.id] for _ in range(6)]
    assert outs[-1].model_frame == 4 and np.isfinite(outs[-1].audio).all()


def test_sessions_full_and_rows_freed(folder):
    model = tiny_model(folder)
    with DuplexRuntime(model, 2) as runtime:
        a, b = runtime.open(), runtime.open()
        with pytest.raises(SessionsFull, match="all 2 sessions are in use"):
            runtime.open()
        runtime.close(a)
        runtime.close(a)  # twice is fine
        c = runtime.open()
        assert c.row == a.row and c.id not in (a.id, b.id)
        assert set(runtime.step()) == {b.id, c.id}
    with pytest.raises(VoxlmError, match="between 1 and 256"):
        DuplexRuntime(model, 0)


def test_input_buffer_underruns_and_cap(folder):
    model = tiny_model(folder)
    with DuplexRuntime(model, 1, max_buffered_seconds=0.2) as runtime:
        session = runtime.open()
        session.feed(np.ones(8000, np.float32) * 0.1)  # 0.5 s into a 0.2 s buffer
        assert session.buffered() == 3200 and session.dropped == 4800 and session.received == 8000
        session.feed([np.nan, np.inf])  # silence, and the two oldest samples go
        assert session.buffered() == 3200 and session.dropped == 4802
        outs = [runtime.step()[session.id] for _ in range(5)]
        assert [o.user_frame for o in outs] == [None, 0, 1, 2, 3]  # the first step: warm-up
        assert session.underruns == 2 and session.buffered() == 3200 - 2 * HOP


# ---------------------------------------------------------------- inner text

def test_text_decoder_words_spaces_and_bytes(folder):
    tok = tokenizer(folder)
    decoder = TextDecoder(tok, text_at=1)
    ids = {piece: tok.sp.piece_to_id(piece) + TEXT_OFFSET for piece in ("▁the", "▁c", "at", "t")}
    pushes = [(TEXT_EOW_ID, 1), (ids["t"], 2), (TEXT_PAD_ID, 3), (TEXT_EOW_ID, 4), (ids["▁c"], 5),
              (ids["at"], 6), (TEXT_PAD_ID, 7), (ids["▁the"], 8), (ids["▁c"], 9)]
    texts, words = [], []
    for text_id, column in pushes:
        text, word = decoder.push(text_id, column)
        texts.append(text)
        words += [word] if word else []
    text, word = decoder.finish()
    texts.append(text)
    words.append(word)
    assert "".join(texts) == "t cat the c"
    assert texts == ["", "t", "", "", " c", "at", "", " the", " c", ""]  # ▁ starts a word
    assert words == [Word("t", 0.08, 0.16), Word("cat", 0.32, 0.48), Word("the", 0.56, 0.64),
                     Word("c", 0.64, 0.72)]
    # an incomplete UTF-8 sequence (byte pieces) waits for the rest of the character
    decoder = TextDecoder(tok)
    first, second = (tok.sp.piece_to_id(f"<0x{b:02X}>") + TEXT_OFFSET for b in "é".encode())
    assert decoder.push(first, 1) == ("", None)
    assert decoder.push(second, 2) == ("é", None)
    assert TextDecoder(None).push(ids["t"], 1) == ("", None)  # no tokenizer: no text


def test_latency_stats_summary():
    stats = LatencyStats(window=3)
    for ms in (1.0, 2.0, 3.0, 10.0):
        stats.add(encode=ms, lm=2 * ms, decode=ms, step=4 * ms)
    summary = stats.summary()
    assert summary["steps"] == 4
    assert summary["lm"]["mean_ms"] == 8.0 and summary["lm"]["max_ms"] == 20.0
    assert summary["step"]["p50_ms"] == 12.0 and summary["encode"]["last_ms"] == 10.0
    json.dumps(summary)  # plain numbers


# ---------------------------------------------------------------- model files and the command

def test_load_dialogue_model(runs):
    model = load_dialogue_model(runs["duplex"])
    assert model.path == runs["duplex"] / "model.safetensors" and model.text_delay == 0
    assert model.info()["codebooks"] == model.lm.config.n_q and model.tokenizer is not None
    with pytest.raises(VoxlmError, match="trained in aligned mode, not duplex.*--mode duplex"):
        load_dialogue_model(runs["aligned"])
    no_user = replace(model.lm.config, user_audio=False)
    with pytest.raises(VoxlmError, match="no user audio stream"):
        type(model)(type(model.lm)(no_user), model.codec, model.tokenizer)


def test_shipped_dialogue_model_loads_and_a_missing_or_damaged_one_is_named(tmp_path, monkeypatch):
    import voxlm.dialogue

    shipped = load_dialogue_model()  # voxlm/assets/dialogue.safetensors, checksum verified
    assert shipped.path == default_dialogue_path() and shipped.lm.config.user_audio
    assert shipped.tokenizer.vocab_size == 1000 and shipped.codec.config.hop == HOP
    # it speaks through the shipped voice decoder (codebook 1 alone), unless told not to
    assert shipped.codec.config.decoder_codebooks == 1
    assert load_dialogue_model(voice=False).codec.config.decoder_codebooks == 0
    missing = tmp_path / "assets" / "dialogue.safetensors"
    monkeypatch.setattr(voxlm.dialogue, "default_dialogue_path", lambda: missing)
    with pytest.raises(VoxlmError, match="no dialogue model ships yet.*train one with"):
        load_dialogue_model()
    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(default_dialogue_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte inside the weights
    damaged.write_bytes(bytes(data))
    (tmp_path / "damaged.tokenizer.model").write_bytes(
        default_dialogue_path().with_suffix(".tokenizer.model").read_bytes())
    with pytest.raises(VoxlmError, match="checksum"):
        load_dialogue_model(damaged)


def test_cli_chat_end_to_end(runs, tmp_path, capsys):
    source = tmp_path / "question.wav"  # 44.1 kHz stereo: mixed down and resampled
    sf.write(source, np.stack([speech(1.0)] * 2, 1)[::1], 16000)
    import soxr
    sf.write(source, soxr.resample(np.stack([speech(1.0)] * 2, 1), 16000, 44100), 44100)
    out, transcript = tmp_path / "dialogue.wav", tmp_path / "dialogue.json"
    code = main(["chat", "--input", str(source), "--output", str(out), "--transcript",
                 str(transcript), "--checkpoint", str(runs["duplex"]), "--max-seconds", "2"])
    assert code == 0, capsys.readouterr().err
    assert "channel 0 you, 1 the model" in capsys.readouterr().out
    info = sf.info(out)
    assert (info.channels, info.samplerate, info.frames) == (2, 16000, 25 * HOP)
    data = json.loads(transcript.read_text())
    assert data["channels"] == ["user", "model"] and data["seconds"] == 2.0
    assert data["input_seconds"] == 1.0 and set(data["latency_ms"]) >= {"encode", "lm", "decode"}
    assert all(set(w) == {"w", "start", "end"} and w["start"] <= w["end"] for w in data["words"])
    assert " ".join(w["w"] for w in data["words"]) == data["text"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert data["int8"] is False


def test_cli_chat_int8_runs_the_lm_as_served(runs, tmp_path, capsys, monkeypatch):
    """--int8: the LM's matrix products with int8 weights (voxlm serve's default), recorded."""
    quantized = count_int8_quantizations(monkeypatch)
    source, out, transcript = tmp_path / "q.wav", tmp_path / "d.wav", tmp_path / "d.json"
    sf.write(source, speech(1.0), 16000)
    code = main(["chat", "--input", str(source), "--output", str(out), "--transcript",
                 str(transcript), "--checkpoint", str(runs["duplex"]), "--max-seconds", "2",
                 "--int8"])
    assert code == 0, capsys.readouterr().err
    assert len(quantized) == 1 and json.loads(transcript.read_text())["int8"] is True
    assert sf.info(out).frames == 25 * HOP


def _free_port_held():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


# id: (arguments with {d} the temp folder, {run} the duplex run, {aligned} an aligned run,
# {port} a port some other socket holds; words the one-line error must contain)
CLI_ERRORS = {
    "chat-input-missing": ("chat --input {d}/nothing.wav --output {d}/o.wav --checkpoint {run}",
                           ["nothing.wav: no such file", "check the path"]),
    "chat-input-not-audio": ("chat --input {d}/text.wav --output {d}/o.wav --checkpoint {run}",
                             ["not a readable audio file", "pass one of .wav"]),
    "chat-output-mp3": ("chat --input {d}/ok.wav --output {d}/o.mp3 --checkpoint {run}",
                        ["cannot write '.mp3'", "use a .wav or .flac name"]),
    "chat-transcript-not-json": ("chat --input {d}/ok.wav --output {d}/o.wav --transcript "
                                 "{d}/t.txt --checkpoint {run}", ["the transcript is JSON",
                                                                  "use a .json name"]),
    "chat-not-duplex": ("chat --input {d}/ok.wav --output {d}/o.wav --checkpoint {aligned}",
                        ["not a dialogue model", "trained in aligned mode",
                         "voxlm lm train", "--mode duplex"]),
    "chat-checkpoint-missing": ("chat --input {d}/ok.wav --output {d}/o.wav --checkpoint "
                                "{d}/nothing", ["model file not found", "check the path"]),
    "chat-max-seconds-negative": ("chat --input {d}/ok.wav --output {d}/o.wav --checkpoint {run}"
                                  " --max-seconds -1", ["--max-seconds -1.0", "in seconds above 0"]),
    "serve-not-duplex": ("serve --port 0 --checkpoint {aligned}", ["not a dialogue model",
                                                                   "--mode duplex"]),
    "serve-port-in-use": ("serve --port {port} --checkpoint {run}",
                          ["cannot listen on 127.0.0.1:{port}", "pass another --port"]),
    "serve-bad-port": ("serve --port 70000 --checkpoint {run}", ["port 70000",
                                                                "a TCP port in 0..65535"]),
    "serve-max-sessions-zero": ("serve --port 0 --max-sessions 0 --checkpoint {run}",
                                ["0 sessions", "between 1 and 256"]),
}
CLI_ERRORS["chat-no-model"] = ("chat --input {d}/ok.wav --output {d}/o.wav",  # default: missing
                               ["no dialogue model ships yet", "--mode duplex", "--checkpoint"])


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_error(case, runs, tmp_path, capsys, monkeypatch):
    import voxlm.dialogue

    monkeypatch.setattr(voxlm.dialogue, "default_dialogue_path",  # as if none shipped
                        lambda: tmp_path / "assets" / "dialogue.safetensors")
    sf.write(tmp_path / "ok.wav", speech(0.5), 16000)
    (tmp_path / "text.wav").write_text("not audio at all")
    holder = _free_port_held()
    port = holder.getsockname()[1]
    args, words = CLI_ERRORS[case]
    fill = {"d": tmp_path, "run": runs["duplex"], "aligned": runs["aligned"], "port": port}
    try:
        code = main([a.format(**fill) for a in args.split()])
    finally:
        holder.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("voxlm: error: "), lines
    assert "; " in lines[0] and all(w.format(**fill) in lines[0] for w in words), (words, lines)
    assert not (tmp_path / "o.wav").exists()


def test_every_dialogue_case_is_a_row_of_the_table():
    from pathlib import Path

    table = (Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md").read_text()
    cases = [*CLI_ERRORS, "chat-no-model", "works-chat-44k-stereo"]
    assert [c for c in cases if f"`{c}`" not in table] == []
