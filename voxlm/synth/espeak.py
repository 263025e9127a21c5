"""eSpeak NG through its C library (ctypes): audio with exact word timings, and IPA phonemes.

The command-line `espeak-ng` prints neither word timings nor a way to get them, but the library
reports a WORD event with the sample position of each word while it synthesizes. The library is
process-global state, so this module keeps one initialised handle per process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading

import numpy as np

ESPEAK_RATE = 22_050  # Hz, the library's output rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_PHONEMES_IPA_TIED = 0x02 | 0x80 | (ord("^") << 8)  # IPA, multi-letter phonemes joined by '^'


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))
_lock = threading.Lock()
_state: dict = {}


def _library():
    if "lib" not in _state:
        from ..errors import VoxlmError

        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise VoxlmError("libespeak-ng is not installed; run `sudo scripts/install-system.sh` "
                             "(Debian package espeak-ng)") from None
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) <= 0:
            raise VoxlmError("libespeak-ng failed to initialise; reinstall the espeak-ng package")
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        _state["lib"] = lib
        _state["chunks"], _state["events"] = [], []

        def on_audio(wav, n, events):
            if n > 0:
                _state["chunks"].append(np.ctypeslib.as_array(wav, (n,)).copy())
            i = 0
            while events[i].type != _EVENT_LIST_TERMINATED:
                if events[i].type == _EVENT_WORD and events[i].length > 0:
                    _state["events"].append((events[i].text_position - 1, events[i].sample))
                i += 1
            return 0

        _state["callback"] = _Callback(on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(_state["callback"])
    return _state["lib"]


def set_voice(lib, voice: str):
    from ..errors import VoxlmError

    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise VoxlmError(f"espeak-ng has no voice '{voice}'; list them with `espeak-ng --voices=en`")


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 175, pitch: int = 50,
               pitch_range: int = 50):
    """Speak `text`; returns (audio int16 [T] at 22.05 kHz, [(char_offset, sample)] per word)."""
    lib = _library()
    with _lock:
        set_voice(lib, voice)
        lib.espeak_SetParameter(_PARAM_RATE, int(words_per_minute), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
        _state["chunks"].clear()
        _state["events"].clear()
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        audio = np.concatenate(_state["chunks"]) if _state["chunks"] else np.zeros(0, np.int16)
        return audio, list(_state["events"])


# eSpeak's American IPA -> the symbols Kokoro's English voices were trained on.
_KOKORO_SYMBOLS = [("a^ɪ", "I"), ("a^ʊ", "W"), ("e^ɪ", "A"), ("o^ʊ", "O"), ("ɔ^ɪ", "Y"),
                   ("d^ʒ", "ʤ"), ("t^ʃ", "ʧ"), ("ɚ", "əɹ"), ("ɐ", "ə"), ("r", "ɹ"), ("ː", ""),
                   ("^", "")]


def phonemes(text: str, voice: str = "en-us", kokoro: bool = False) -> str:
    """IPA phonemes of `text`, keeping its punctuation (which drives intonation in neural TTS)."""
    lib = _library()
    out = []
    with _lock:
        set_voice(lib, voice)
        for piece, punct in re.findall(r"([^,.;:!?]*)([,.;:!?]*)", text):
            if not piece.strip() and not punct:
                continue
            ptr = ctypes.pointer(ctypes.c_char_p(piece.encode("utf-8")))
            clause = []
            while ptr.contents.value:
                clause.append(lib.espeak_TextToPhonemes(ptr, _CHARS_UTF8, _PHONEMES_IPA_TIED).decode())
            out.append(" ".join(c.strip() for c in clause if c.strip()) + punct[:1])
    ipa = " ".join(p for p in out if p).strip()
    if kokoro:
        for a, b in _KOKORO_SYMBOLS:
            ipa = ipa.replace(a, b)
    return ipa
