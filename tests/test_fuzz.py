"""Fuzzing (hypothesis, fixed example counts): the manifest reader, the audio loader on random
WAV headers, and the model and training-state loaders on random or damaged files return valid
data or raise VoxlmError, never anything else. Each test prints how many inputs it tried
(docs/RELIABILITY.md records the counts; random bytes into load_audio: tests/test_audio.py)."""
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxlm.errors import VoxlmError

torch.set_num_threads(1)
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

ROW = {"id": "0001", "audio": "audio/0001.wav", "duration": 1.5, "text": "hello there",
       "words": [{"w": "hello", "start": 0.1, "end": 0.5}, {"w": "there", "start": 0.6, "end": 1.0}],
       "speaker": "espeak:en-us+m1", "engine": "espeak", "split": "train"}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                                 inner, max_size=4),
                    max_leaves=12)
PATHS = st.one_of(st.text(max_size=20), st.sampled_from(
    ["", ".", "..", "/", "/etc/passwd", "../x.wav", "audio/../../x.wav", "audio/\x00.wav",
     "audio/\ud800.wav", "audio//0001.wav", "./audio/0001.wav", "~/x.wav", "audio/" + "a" * 300]))


def _mutated_row(draw_key, value, drop):
    row = dict(ROW)
    if drop:
        row.pop(draw_key, None)
    else:
        row[draw_key] = value
    return row


ROWS = st.one_of(
    st.builds(_mutated_row, st.sampled_from(sorted(ROW)), JSON, st.booleans()),
    st.builds(lambda path: {**ROW, "audio": path}, PATHS),
    st.builds(lambda words: {**ROW, "words": words}, st.lists(JSON, max_size=3)),
    JSON,
)
LINES = st.one_of(ROWS.map(lambda r: json.dumps(r, allow_nan=True)), st.text(max_size=60),
                  st.binary(max_size=60).map(lambda b: b.decode("latin-1")))


def test_manifest_reader():
    from voxlm.data import REQUIRED, read_manifest

    outcomes = {"rows": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.jsonl"

        @FUZZ
        @given(st.lists(LINES, min_size=0, max_size=4))
        def check(lines):
            path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
            try:
                rows = read_manifest(path)
            except VoxlmError as error:
                assert "\n" not in str(error)
                outcomes["error"] += 1
                return
            for row in rows:
                assert all(isinstance(row[k], kind) for k, kind in REQUIRED.items())
                resolved = (Path(tmp) / row["audio"]).resolve()
                assert resolved.is_relative_to(Path(tmp).resolve()) and resolved != Path(tmp).resolve()
                assert row["duration"] >= 0 and np.isfinite(row["duration"])
            outcomes["rows"] += 1

        check()
    print(f"manifest reader fuzz: {sum(outcomes.values())} inputs, {outcomes}")
    assert sum(outcomes.values()) == EXAMPLES and outcomes["rows"] > 0


def _wav(fmt, channels, rate, bits, block, data_size, data, extra_fmt=b"") -> bytes:
    """A RIFF/WAVE file with exactly these header fields, whatever they mean."""
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) % 2**32, block, bits) + extra_fmt
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
            + b"data" + struct.pack("<I", data_size if data_size is not None else len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@st.composite
def plausible_wavs(draw):
    """A consistent PCM/float header and data, then maybe one field set to anything."""
    fmt, bits = draw(st.sampled_from([(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)]))
    channels, rate = draw(st.integers(1, 3)), draw(st.sampled_from([8000, 16000, 22050, 44100, 48000]))
    fields = {"fmt": fmt, "channels": channels, "rate": rate, "bits": bits, "block": channels * bits // 8,
              "data_size": None, "data": draw(st.binary(min_size=64, max_size=800))}
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(fields)))
        fields[key] = draw({"data": st.binary(max_size=800), "data_size": st.one_of(st.none(), U32),
                            "rate": U32}.get(key, U16))
    return _wav(**fields)


U16, U32 = st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
WAVS = st.one_of(plausible_wavs(), st.builds(
    _wav,
    fmt=st.one_of(st.sampled_from([1, 3, 6, 7, 0x11, 0x55, 0xFFFE]), U16),
    channels=st.one_of(st.sampled_from([0, 1, 2, 6, 255]), U16),
    rate=st.one_of(st.sampled_from([0, 1, 8000, 16000, 44100, 2**31]), U32),
    bits=st.one_of(st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64]), U16),
    block=st.one_of(st.sampled_from([0, 1, 2, 4, 8]), U16),
    data_size=st.one_of(st.none(), st.sampled_from([0, 1, 0xFFFFFFFF]), U32),
    data=st.binary(max_size=600),
    extra_fmt=st.one_of(st.just(b""), st.binary(max_size=30)),
))


def test_audio_loader_on_random_wav_headers():
    from voxlm.audio import load_audio

    outcomes = {"audio": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.wav"

        @FUZZ
        @given(WAVS)
        def check(data):
            path.write_bytes(data)
            try:
                audio = load_audio(path, max_seconds=60)
            except VoxlmError as error:
                assert "fuzz.wav" in str(error) and "\n" not in str(error)
                outcomes["error"] += 1
                return
            assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0
            assert np.isfinite(audio).all()
            outcomes["audio"] += 1

        check()
    print(f"audio loader fuzz (random WAV headers): {sum(outcomes.values())} inputs, {outcomes}")
    assert sum(outcomes.values()) == EXAMPLES


HEADER_VALUES = st.one_of(JSON, st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "I64", "BOOL"]),
                          st.lists(st.integers(-2, 2**40), max_size=3))


@st.composite
def safetensors_files(draw):
    """Random safetensors headers: tensor entries with random dtype/shape/offsets, random
    metadata, a random length prefix, random data after it."""
    header = {}
    for name in draw(st.lists(st.text(max_size=8), max_size=3)):
        header[name] = draw(st.one_of(
            st.fixed_dictionaries({"dtype": HEADER_VALUES, "shape": HEADER_VALUES,
                                   "data_offsets": HEADER_VALUES}), JSON))
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["kind", "format_version", "config", "sha256", "extra",
                                             "header_sha256"]), st.one_of(st.text(max_size=20), JSON)),
            JSON))
    raw = json.dumps(header).encode()
    size = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
    return struct.pack("<Q", size) + raw + draw(st.binary(max_size=64))


def test_checkpoint_loader_on_random_headers():
    from voxlm.checkpoint import load_model

    outcomes = {"loaded": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.safetensors"

        @FUZZ
        @given(safetensors_files())
        def check(data):
            path.write_bytes(data)
            try:
                tensors, config, extra = load_model(path, "codec")
            except VoxlmError as error:
                assert "\n" not in str(error)
                outcomes["error"] += 1
                return
            assert isinstance(config, dict) and isinstance(extra, dict)
            outcomes["loaded"] += 1

        check()
    print(f"checkpoint loader fuzz (random headers): {sum(outcomes.values())} inputs, {outcomes}")
    assert sum(outcomes.values()) == EXAMPLES


EDITS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def tiny_codec_file(tmp_path_factory):
    from voxlm.codec.model import Codec, codec_config
    from voxlm.codec.train import export_codec

    torch.manual_seed(0)
    return export_codec(Codec(codec_config("tiny")), tmp_path_factory.mktemp("fuzz") / "tiny.safetensors")


def _damage(data: bytes, edits, cut: float, header_only: bool) -> bytes:
    """Overwrite bytes at relative positions (within the JSON header if header_only), then cut."""
    out = bytearray(data)
    span = 8 + struct.unpack("<Q", data[:8])[0] if header_only else len(data)
    for where, value in edits:
        out[int(where * span)] = value
    return bytes(out[: max(1, int(cut * len(out)))])


def test_codec_loader_on_damaged_files(tiny_codec_file):
    """A real model file with bytes overwritten (anywhere, or in its header) and maybe cut short
    loads to exactly the original weights and config, or is refused with VoxlmError."""
    from voxlm.checkpoint import load_model
    from voxlm.codec.model import load_codec

    original = tiny_codec_file.read_bytes()
    reference = load_codec(tiny_codec_file).state_dict()
    _, config, _ = load_model(tiny_codec_file, "codec")
    outcomes = {"same": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.safetensors"

        @FUZZ
        @given(EDITS, st.one_of(st.just(1.0), st.floats(0, 1)), st.booleans())
        def check(edits, cut, header_only):
            path.write_bytes(_damage(original, edits, cut, header_only))
            try:
                codec = load_codec(path)
            except VoxlmError as error:
                assert "\n" not in str(error)
                outcomes["error"] += 1
                return
            assert load_model(path, "codec")[1] == config  # what loads is what was saved
            state = codec.state_dict()
            assert all(torch.equal(state[k], reference[k]) for k in reference)
            outcomes["same"] += 1

        check()
    print(f"codec loader fuzz (damaged files): {sum(outcomes.values())} inputs, {outcomes}")
    assert sum(outcomes.values()) == EXAMPLES and outcomes["error"] > EXAMPLES // 2


def test_training_state_loader_on_damaged_files():
    from voxlm.checkpoint import load_torch, save_torch_atomic

    state = {"step": 7, "rng": torch.get_rng_state(), "modules": {"w": torch.randn(64, 8)},
             "optimizers": {"adam": {"state": {0: {"exp_avg": torch.randn(64, 8)}}}}}
    outcomes = {"same": 0, "error": 0}
    with tempfile.TemporaryDirectory() as tmp:
        good = save_torch_atomic(Path(tmp) / "good.pt", state).read_bytes()
        path = Path(tmp) / "train_state.pt"

        @FUZZ
        @given(EDITS, st.one_of(st.just(1.0), st.floats(0, 1)))
        def check(edits, cut):
            path.write_bytes(_damage(good, edits, cut, header_only=False))
            try:
                loaded = load_torch(path)
            except VoxlmError as error:
                assert "\n" not in str(error)
                outcomes["error"] += 1
                return
            assert loaded["step"] == 7 and torch.equal(loaded["modules"]["w"], state["modules"]["w"])
            assert torch.equal(loaded["optimizers"]["adam"]["state"][0]["exp_avg"],
                               state["optimizers"]["adam"]["state"][0]["exp_avg"])
            outcomes["same"] += 1

        check()
    print(f"training state loader fuzz (damaged files): {sum(outcomes.values())} inputs, {outcomes}")
    assert sum(outcomes.values()) == EXAMPLES and outcomes["error"] > EXAMPLES // 2
