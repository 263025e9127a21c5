"""python benchmarks/duplex_load.py [--sessions 1 2 4 8] [--seconds 20] [--threads 2] [--fp32]
    [--checkpoint default]

Load test of the full-duplex runtime and `voxlm serve` on loopback: N clients talk to one
in-process server at once, in real time, and the script reports what the server's clock and the
clients saw. It stops by itself (every wait has a timeout) and always closes the server.

Model: `--checkpoint` (a dialogue model file or run folder; `default`: the shipped one), or by
default random weights at the base size: `LM(replace(lm_config("base"), text_card=1002))`
(duplex: user_audio=True; 1000 tokenizer pieces + 2 reserved ids), the shipped codec
(`load_codec(None)`) and the 1000-piece tokenizer of data/tokens_sp1k (a tiny one is trained
when it is missing). The LM runs with int8 weights (`ServerConfig(int8=True)`, as `voxlm serve`
does; `--fp32`: float32 weights).

Per N (`--sessions`): a `DialogueServer` with max_sessions = N (a batch row per client; a server
started with --max-sessions 8 steps 8 rows whatever the number of clients, so its cost is the
N = 8 row) on a free loopback port in a `BackgroundServer`, and N aiohttp websocket clients.
Each client streams real speech (wavs of data/heldout, each client from another offset; a
synthetic buzz when there are none) for `--seconds`, as s16le PCM in 80 ms frames paced by the
wall clock, then sends stop and reads until the server closes.

1. Step time: the runtime's own per-step timings (`runtime.latency`: encode, LM, decode and the
   whole step, first 12 steps of warm-up left out): mean and p95 in ms, and the mean step as a
   share of the 80 ms frame period. Real time kept: no late step (the server's clock never fell
   more than two frames behind) and every client got at least 98% of 12.5 model frames per
   second of its session. Underruns: steps between a client's first and last frame taken that
   found less than a frame of its input; input dropped: seconds of a client's audio dropped
   because more than 1 s of it was queued (the server ran behind).
2. Client latency: each step takes (at most) one of the user's frames, and the server sends each
   session one audio message per step, in order, from its first step. The script wraps
   `runtime.step` to log which of the client's frames each step of each session took (none:
   warm-up or underrun), so audio message m answers the frame its step m took, and latency = the
   message's arrival - the time that frame was sent. Each client sends frame t when its 80 ms
   would have been captured by a microphone started at a random moment in the first frame after
   the ready byte (a random phase with the server's clock, which moves within a few steps to
   the moment the frames arrive; with several clients at random phases it can meet only the
   latest, and the others wait in the server's input queue). The latency is then: that wait
   (if any), the step, and loopback
   both ways (no jitter buffer, no capture chunk). This is pipeline latency only: the model's
   own decision time (when a trained model chooses to answer: `voxlm eval dialogue`'s response
   latency) is not in it. Median and p95 over all clients' frames. The step that takes the
   user's frame t gives the model's frame t + 1 - S (S = `runtime.speak_delay`: 0 for a voice
   decoder that reads codebook 1 alone, 1 for the codec's own decoder), whose place in the
   layout begins S frames before frame t was sent; so the model's voice plays the pipeline
   latency + S x 80 ms later than its place ("beyond the layout"), and the response latency over
   the websocket is that plus `voxlm eval dialogue`'s (measured in the layout).

Bars (issue 5): one frame step (encode + LM + decode) at most 25% of the frame period on one CPU
thread (`--threads 1`); at least 8 concurrent sessions in real time on this 2-core machine;
median response latency at most 300 ms over the websocket.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FRAME_S = 0.08  # one codec frame at 12.5 Hz
HOP = 1280  # samples per frame at 16 kHz
WARMUP_STEPS = 12  # steps left out of the step-time statistics
STEP_BAR, SESSIONS_BAR, LATENCY_BAR_MS = 0.25, 8, 300.0


def build_model(checkpoint=None):
    """The dialogue model of `checkpoint` ("default": the shipped one), or with None random
    weights at the base size (see the docstring)."""
    from voxlm.codec.model import load_codec
    from voxlm.dialogue import DialogueModel, load_dialogue_model
    from voxlm.lm.model import LM, lm_config
    from voxlm.lm.tokenizer import load_tokenizer, train_tokenizer

    if checkpoint is not None:
        return load_dialogue_model(None if checkpoint == "default" else Path(checkpoint))
    path = REPO / "data/tokens_sp1k/tokenizer.model"
    if path.exists():
        tok = load_tokenizer(path)
    else:
        import tempfile
        words = "the cat sat on a mat while we talked about tea and the weather today".split()
        texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
        tok = train_tokenizer(texts, 300, Path(tempfile.mkdtemp()) / "tokenizer.model")
    torch.manual_seed(0)
    lm = LM(replace(lm_config("base"), text_card=1002)).eval()
    return DialogueModel(lm, load_codec(None), tok, text_delay=0)


def speech(seconds: float, clients: int) -> list:
    """[clients] float32 16 kHz arrays of `seconds` each, cut from the held-out wavs."""
    from voxlm.audio import load_audio

    wavs, total = [], 0
    for wav in sorted((REPO / "data/heldout/audio").glob("*.wav")):
        wavs.append(load_audio(wav))
        total += wavs[-1].size
        if total > (seconds + 10) * 16000 * 2:
            break
    if not wavs:  # a voiced buzz with gaps
        t = np.arange(int(60 * 16000)) / 16000
        wavs = [(0.3 * np.sin(2 * np.pi * 170 * t) * (np.sin(2 * np.pi * 3 * t) > -0.3))]
    audio = np.concatenate(wavs).astype(np.float32)
    need = int(seconds * 16000) + HOP
    audio = np.tile(audio, need // audio.size + 2)
    return [audio[i * 37_000:i * 37_000 + need] for i in range(clients)]


async def client(url: str, samples: np.ndarray, seconds: float, phase: float,
                 keep_audio: bool = False) -> dict:
    """One real-time session -> {"session": id, "start": when the microphone started, "sent":
    [s], "received": [s], "info": the last JSON message} (perf_counter times), and with
    `keep_audio` "audio": float32 [M * HOP], the model's voice in its M messages."""
    import aiohttp

    sent, received, info = [], [], {}  # send times of frames; arrival times of audio messages
    chunks = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url + "api/chat", timeout=10) as ws:
            assert (await ws.receive(timeout=10)).data == b"\x00", "no ready byte"
            start = time.perf_counter() + phase  # a microphone started `phase` after ready

            async def read():
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x01":
                        received.append(time.perf_counter())
                        if keep_audio:
                            chunks.append(np.frombuffer(message.data[1:], "<i2"))
                    elif message.type == aiohttp.WSMsgType.TEXT:
                        info.update(json.loads(message.data))
                        if info["type"] in ("error", "end"):
                            break
                    elif message.type != aiohttp.WSMsgType.BINARY:
                        break

            reader = asyncio.create_task(read())
            for t in range(round(seconds / FRAME_S)):  # frame t, once its 80 ms were "captured"
                await asyncio.sleep(max(start + (t + 1) * FRAME_S - time.perf_counter(), 0.0))
                chunk = samples[t * HOP:(t + 1) * HOP]
                pcm = (np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes()
                await ws.send_bytes(b"\x01" + pcm)
                sent.append(time.perf_counter())
            await asyncio.sleep(3 * FRAME_S)  # the answer to the last frame
            await ws.send_str('{"type": "stop"}')
            try:
                await asyncio.wait_for(reader, timeout=10)
            except asyncio.TimeoutError:
                reader.cancel()
    out = {"session": info.get("session"), "start": start, "sent": sent, "received": received,
           "info": info}
    if keep_audio:
        out["audio"] = (np.concatenate(chunks).astype(np.float32) / 32767 if chunks
                        else np.zeros(0, np.float32))
    return out


def record_frames(runtime) -> dict:
    """Wrap runtime.step to log, per session and step (= audio message), the index of the
    client's frame it took (None: warm-up or underrun). -> {session id: [index or None]}."""
    log, step = {}, runtime.step

    def logged():
        before = {s.id: (s.underruns, s.dropped) for s in runtime.sessions()}
        results = step()
        now = {s.id: s for s in runtime.sessions()}
        for sid, r in results.items():
            s, frame = now.get(sid), None
            under, dropped = before.get(sid, (-1, 0))
            if s is not None and r.user_frame is not None and s.underruns == under:
                # steps that underran took nothing; input beyond 1 s dropped its oldest samples:
                # the client's frame that holds the last sample taken
                frame = (dropped + HOP * (r.user_frame - s.underruns + 1) - 1) // HOP
            log.setdefault(sid, []).append(frame)
        return results

    runtime.step = logged
    return log


def measure(model, sessions: int, seconds: float, int8: bool, faults=None) -> dict:
    """N real-time clients on one server. `faults`: an async function (url, server, seconds)
    -> dict run beside them with one more session slot (benchmarks/duplex_faults.py); its
    result is the row's "faults"."""
    from voxlm.server import BackgroundServer, DialogueServer, ServerConfig

    slots = sessions + (1 if faults else 0)
    server = DialogueServer(model, ServerConfig(port=0, max_sessions=slots, seed=0, int8=int8))
    log = record_frames(server.runtime)
    voices = speech(seconds, sessions)
    phases = np.random.default_rng(sessions).uniform(0, FRAME_S, sessions)
    with BackgroundServer(server) as url:
        async def everyone():
            jobs = [client(url, v, seconds, p) for v, p in zip(voices, phases)]
            if faults:
                jobs.append(faults(url, server, seconds))
            return await asyncio.wait_for(asyncio.gather(*jobs), timeout=seconds + 60)

        clients = asyncio.run(everyone())
        fault_counts = clients.pop() if faults else None
        time.sleep(0.3)  # the server's session summaries
        late = server.late_steps
        recent = {k: list(v)[WARMUP_STEPS:] or [0.0]
                  for k, v in server.runtime.latency.recent.items()}
        dropped = sum(f["dropped_samples"] for f in server.finished)
    stage = {k: (float(np.mean(v)), float(np.percentile(v, 95))) for k, v in recent.items()}
    latency, underruns, rates = [], 0, []
    for c in clients:
        frames = log.get(c["session"], [])
        taken = [m for m, f in enumerate(frames) if f is not None]
        if taken:  # steps between the first and the last frame taken that took none
            underruns += sum(1 for m in range(taken[0], taken[-1]) if frames[m] is None)
        latency += [c["received"][m] - c["sent"][frames[m]] for m in taken
                    if m < len(c["received"]) and frames[m] < len(c["sent"])]
        if len(c["received"]) > 1:
            rates.append((len(c["received"]) - 1) / (c["received"][-1] - c["received"][0]))
    latency = np.asarray(latency) * 1000.0
    row = {"sessions": sessions, "threads": torch.get_num_threads(), "faults": fault_counts,
           "lm": "int8" if int8 else "fp32",
           "stage": stage, "late_steps": late, "steps": len(recent["step"]),
           "rate_min": min(rates) if rates else 0.0, "underruns": underruns, "dropped": dropped,
           "latency_p50": float(np.median(latency)) if latency.size else float("nan"),
           "latency_p95": float(np.percentile(latency, 95)) if latency.size else float("nan"),
           "speak_delay": server.runtime.speak_delay}
    row["offset_p50"] = row["latency_p50"] + 1000 * FRAME_S * row["speak_delay"]
    row["share"] = stage["step"][0] / (FRAME_S * 1000)
    row["real_time"] = late == 0 and len(rates) == sessions and row["rate_min"] >= 0.98 / FRAME_S
    return row


def table(rows: list) -> str:
    out = ["| sessions | threads | LM | step ms mean / p95 | encode / LM / decode ms (mean) | "
           "% of frame | frames/s per client (min) | late steps | underruns / input dropped s | "
           "real time | "
           "client latency ms p50 / p95 | beyond the layout ms p50 |", "|" + "---|" * 12]
    for r in rows:
        s = r["stage"]
        out.append(f"| {r['sessions']} | {r['threads']} | {r['lm']} | {s['step'][0]:.1f} / "
                   f"{s['step'][1]:.1f} | {s['encode'][0]:.1f} / {s['lm'][0]:.1f} / "
                   f"{s['decode'][0]:.1f} | {100 * r['share']:.0f}% | {r['rate_min']:.2f} | "
                   f"{r['late_steps']} | {r['underruns']} / {r['dropped'] / 16000:.1f} | "
                   f"{'yes' if r['real_time'] else 'no'} | "
                   f"{r['latency_p50']:.0f} / {r['latency_p95']:.0f} | {r['offset_p50']:.0f} |")
    return "\n".join(out)


def bars(rows: list) -> str:
    one = [r for r in rows if r["threads"] == 1 and r["sessions"] == 1]
    step = (f"{'pass' if one[0]['share'] <= STEP_BAR else 'FAIL'}: {one[0]['stage']['step'][0]:.1f}"
            f" ms = {100 * one[0]['share']:.0f}% of 80 ms" if one
            else "not measured here (run --threads 1 --sessions 1)")
    many = [r for r in rows if r["sessions"] >= SESSIONS_BAR]
    kept = max([r["sessions"] for r in rows if r["real_time"]], default=0)
    sessions = (f"{'pass' if any(r['real_time'] for r in many) else 'FAIL'}: largest N in real "
                f"time = {kept} (of {[r['sessions'] for r in rows]}, {rows[0]['threads']} threads)"
                if many else f"not measured here (largest N in real time: {kept})")
    worst = max(r["offset_p50"] for r in rows)
    latency = (f"{'pass' if worst <= LATENCY_BAR_MS else 'FAIL'} for the runtime alone: its "
               f"worst median {worst:.0f} ms beyond the layout (queue wait + step + loopback + "
               f"{rows[0]['speak_delay']} x 80 ms of decoder delay); add the model's own decision "
               "time, `voxlm eval dialogue`'s response latency")
    return "\n".join([f"- one frame step <= 25% of 80 ms on one thread: {step}",
                      f"- >= {SESSIONS_BAR} concurrent sessions in real time: {sessions}",
                      f"- median response latency <= {LATENCY_BAR_MS:.0f} ms: {latency}"])


def parse_with_model(p, argv) -> tuple:
    """Add the server's flags (threads, fp32, checkpoint) to `p`, parse, set the threads and
    build the model: -> (args, model)."""
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    p.add_argument("--fp32", action="store_true", help="float32 LM weights instead of int8")
    p.add_argument("--checkpoint", help="a dialogue model file or run folder, or 'default' for "
                                        "the shipped one (default: random weights, base size)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args, build_model(args.checkpoint)


def describe(model, args) -> str:
    params = sum(p.numel() for p in model.lm.parameters()) / 1e6
    c = model.lm.config
    weights = (f"LM {model.path}" if args.checkpoint else "LM base, random weights")
    return (f"{weights}, {params:.1f} M params, dim {c.dim} x {c.layers} layers, {c.n_q} "
            f"codebooks, text_card {c.text_card}, {'fp32' if args.fp32 else 'int8'}; codec "
            f"{model.codec.config.hop} hop; tokenizer {model.tokenizer.vocab_size} pieces; "
            f"{args.threads} torch threads")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0, help="each client's session")
    args, model = parse_with_model(p, argv)
    print(f"duplex load: {describe(model, args)}; {args.seconds:g} s per client; loopback",
          flush=True)
    rows = []
    for n in args.sessions:
        began = time.perf_counter()
        rows.append(measure(model, n, args.seconds, not args.fp32))
        r = rows[-1]
        print(f"  N={n}: step {r['stage']['step'][0]:.1f} ms, latency p50 "
              f"{r['latency_p50']:.0f} ms, real time {r['real_time']} "
              f"({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    print()
    print(table(rows))
    print()
    print(bars(rows))


if __name__ == "__main__":
    main()
