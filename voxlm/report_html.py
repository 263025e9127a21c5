"""The demo's HTML report: one self-contained page (PNG plots embedded as base64, the wavs beside
it in <audio> elements) with, per conversation, both channels' waveform and spectrogram, the
user's words and the model's inner text on a timeline under them, and the latency per stage.

    write_demo_report("voxlm-demo/report.html", conversations, model.info(), run_info)
"""
from __future__ import annotations

import base64
import html
import io
import warnings
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE

N_FFT = 512  # 32 ms window at 16 kHz
SPEC_HOP = 160  # 10 ms between spectrogram columns
SPEC_RANGE_DB = 80.0  # dynamic range shown below each spectrogram's peak
ENVELOPE_POINTS = 2000  # min/max pairs a waveform is drawn with
KINDS = {"arithmetic": "an arithmetic question, as in the training QA",
         "chitchat": "a chitchat opener"}
STAGES = ("encode", "lm", "decode", "step")
STAGE_NAMES = {"encode": "encode (codec, user frame)", "lm": "LM step (temporal + depth)",
               "decode": "decode (codec, model frame)", "step": "whole step"}


def printable(text: str, limit: int = 0) -> str:
    """Text with control characters (an untrained model's inner text has them) as U+FFFD,
    cut to `limit` characters (0: whole) with an ellipsis."""
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if not limit or len(text) <= limit else text[:limit - 1] + "\u2026"


def spectrogram_db(audio: np.ndarray) -> np.ndarray:
    """[N] float32 16 kHz -> [N_FFT // 2 + 1, T] magnitude in dB (Hann window, 10 ms hop)."""
    x = np.pad(audio.astype(np.float32), (N_FFT // 2, N_FFT // 2))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::SPEC_HOP]  # [T, N_FFT]
    spec = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1))
    return 20.0 * np.log10(spec.T + 1e-6)


def _envelope(audio: np.ndarray) -> tuple:
    """(times [P], low [P], high [P]): the waveform's min and max per bucket of samples."""
    size = max(1, -(-audio.size // ENVELOPE_POINTS))
    padded = np.pad(audio, (0, -audio.size % size)).reshape(-1, size)
    times = (np.arange(padded.shape[0]) * size + size / 2) / SAMPLE_RATE
    return times, padded.min(axis=1), padded.max(axis=1)


def _timeline(ax, words: list, y: float, color: str):
    """Words as spans at height y, labels staggered on three rows so neighbours stay legible."""
    for k, w in enumerate(words):
        ax.broken_barh([(w["start"], max(w["end"] - w["start"], 0.02))], (y - 0.12, 0.24),
                       color=color, alpha=0.35)
        ax.text(w["start"], y + 0.16 + 0.17 * (k % 3), printable(w["w"]), fontsize=7,
                color=color, clip_on=True, parse_math=False)  # "$" is text, not mathtext


def plot_conversation(audio: np.ndarray, user_words: list, model_words: list,
                      user_seconds: float, title: str) -> bytes:
    """PNG: waveform and spectrogram of channel 0 (user) and 1 (model) [N, 2], then the user's
    words and the model's inner text on one time axis; a dashed line where the question ends."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the backend alone

    seconds = len(audio) / SAMPLE_RATE
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.5, 1, 1.5, 1.3]})
    for row, (channel, name, color) in enumerate(((0, "user", "C0"), (1, "model", "C1"))):
        wave, spec = axes[2 * row], axes[2 * row + 1]
        times, low, high = _envelope(audio[:, channel])
        wave.fill_between(times, low, high, color=color, lw=0.5)
        wave.set_ylim(-1, 1)
        wave.set_ylabel(f"{name}\nwaveform", fontsize=8)
        db = spectrogram_db(audio[:, channel])
        top = max(float(db.max()), -120.0 + SPEC_RANGE_DB)
        spec.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=top - SPEC_RANGE_DB,
                    vmax=top, extent=(0, db.shape[1] * SPEC_HOP / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))
        spec.set_ylabel(f"{name}\nkHz", fontsize=8)
    text = axes[4]
    _timeline(text, user_words, 1.0, "C0")
    _timeline(text, model_words, 0.0, "C1")
    text.set_ylim(-0.4, 1.8)
    text.set_yticks([0, 1], ["model\ninner text", "user\nwords"], fontsize=8)
    text.set_xlabel("seconds")
    text.set_xlim(0, seconds)
    for ax in axes:
        ax.axvline(user_seconds, color="gray", ls="--", lw=1)
        ax.tick_params(labelsize=7)
    fig.suptitle(printable(title), fontsize=10, parse_math=False)
    fig.tight_layout()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a glyph the font lacks is drawn as a box: no warning
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _latency_table(latency: dict, rtf: float) -> str:
    rows = "".join(
        f"<tr><td>{STAGE_NAMES[s]}</td>"
        + "".join(f'<td data-stage="{s}" data-stat="{stat}">{latency[s][stat]:.2f}</td>'
                  for stat in ("mean_ms", "p95_ms"))
        + "</tr>" for s in STAGES)
    return ("<table><tr><th>stage</th><th>mean ms</th><th>p95 ms</th></tr>" + rows + "</table>"
            f'<p>{latency["steps"]} steps of 80 ms; real-time factor '
            f'<b data-stat="real_time_factor">{rtf:.3f}</b> (step time over frame time; below 1 '
            "keeps up with live speech)</p>")


def _words_line(words: list) -> str:
    return " ".join(f'<span title="{w["start"]:.2f}-{w["end"]:.2f} s">'
                    f'{html.escape(printable(w["w"]))}</span>' for w in words) or "<i>(none)</i>"


def _conversation_html(k: int, conv) -> str:
    q, result = conv.question, conv.result
    words = [w._asdict() for w in result.words]
    png = plot_conversation(result.audio, conv.user_words, words, conv.user_seconds,
                            f"conversation {k}: {q.text}")
    expected = (f"<p>the training dialogues answer: <i>{html.escape(q.expected)}</i></p>"
                if q.expected else "")
    return (f'<section id="conversation-{k}"><h2>{k}. {html.escape(q.text)}</h2>'
            f"<p>{KINDS.get(q.kind, q.kind)} in the held-out voice <code>{html.escape(q.voice)}</code>; "
            f'<a href="{conv.wav.name}">{conv.wav.name}</a> (left: user, right: model), '
            f'transcript <a href="{conv.transcript.name}">{conv.transcript.name}</a></p>'
            f'<audio controls preload="none" src="{conv.wav.name}"></audio>'
            f'<p><b>model (inner text):</b> {_words_line(words)}'
            f"</p>{expected}"
            f'<img alt="waveforms, spectrograms and text of conversation {k}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<h3>latency per stage</h3>{_latency_table(result.latency, conv.real_time_factor)}"
            "</section>")


def _overview(conversations: list) -> str:
    """One row per conversation: question, the model's text, length, step time, real-time factor."""
    rows = "".join(
        f'<tr><td><a href="#conversation-{k}">{k}. {html.escape(c.question.text)}</a></td>'
        f"<td class=t>{html.escape(printable(c.result.text.strip(), 80)) or '<i>(none)</i>'}</td>"
        f"<td>{len(c.result.audio) / SAMPLE_RATE:.1f}</td>"
        f'<td>{c.result.latency["step"]["mean_ms"]:.1f}</td><td>{c.real_time_factor:.3f}</td></tr>'
        for k, c in enumerate(conversations, 1))
    return ("<table><tr><th>question (user)</th><th>model's inner text</th><th>seconds</th>"
            "<th>step ms</th><th>real-time factor</th></tr>" + rows + "</table>")


STYLE = """body{font-family:system-ui,sans-serif;max-width:1050px;margin:2em auto;padding:0 1em;
color:#222}img{max-width:100%}audio{width:100%}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,td.t{text-align:left}
code{background:#f3f3f3;padding:0 3px}section{border-top:1px solid #ddd;margin-top:2em}"""


def write_demo_report(path, conversations: list, model_info: dict, run: dict) -> Path:
    """report.html beside the conversations' wavs (demo.Conversation each); `run`: int8, seed,
    wall_seconds, serve_url."""
    from .data import write_atomic

    path = Path(path)
    params = model_info.get("parameters") or 0
    head = (f"<h1>voxlm demo: {len(conversations)} full-duplex conversations</h1>"
            f"<p>model <code>{html.escape(str(model_info.get('path')))}</code>, "
            f"{params / 1e6:.1f} M parameters, {model_info.get('codebooks')} codebooks at "
            f"{model_info.get('frame_rate')} Hz, LM {'int8' if run['int8'] else 'fp32'}; "
            f"seed {run['seed']}; {run['wall_seconds']} s in all. The questions are spoken by "
            "festival voices no model was trained on. Each plot shows the user (channel 0) and "
            "the model (channel 1) on one time axis; the dashed line is where the question ends.</p>"
            f"<p><b>Talk to it live:</b> run <code>voxlm serve</code>, then open "
            f'<a href="{run["serve_url"]}">{run["serve_url"]}</a> and allow the microphone.</p>')
    body = _overview(conversations) + "".join(
        _conversation_html(k, c) for k, c in enumerate(conversations, 1))
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>voxlm demo</title>'
            f"<style>{STYLE}</style></head><body>{head}{body}</body></html>\n")
    return write_atomic(path, page)
