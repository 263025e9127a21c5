"""python benchmarks/websocket_latency.py [--data data/qa] [--limit 40] [--clients 4]
    [--threads 2] [--checkpoint default] [--pad-temperature T] [--fp32] [--fixed-clock]

Response latency over the websocket, as someone talking to `voxlm serve` would meet it: from
the moment the user stops speaking to the moment the model's voice reaches them.

Held-out dialogues of `--data` (a `voxlm synth dialogues` folder; the rows `voxlm eval
dialogue` takes: user voices never trained on, split test first, then valid) are played to an
in-process `voxlm serve` (the shipped model unless `--checkpoint`; int8 LM as served) on
loopback by `--clients` websocket clients at once, each taking the next dialogue when it has
finished one, each dialogue in a session of its own. A client streams the user channel in 80 ms
frames paced by the wall clock, as a microphone started at a random moment after the ready byte
would (frame t is sent once its 80 ms have been captured), then `TAIL_S` of silence, then stop.
It keeps every model-audio message with its arrival time.

For each user turn the reference answers (`eval.dialogue.answered_user_turns`), the user stops
speaking at `mic start + end` (the turn's end in the manifest, s into the user channel). The
model's voice: `turntaking.voice_activity` over the audio the client received, its onsets on
the 10 ms grid, each at the wall time it would be heard played as it arrives (no jitter buffer:
the arrival of its message plus its place inside the 80 ms message). Latency = the first onset
in [end - OVERLAP_S, end + WINDOW_S] minus the user's end (negative: it started in overlap;
none: a miss), the windows of `voxlm eval dialogue`. The reference dialogues' own assistant
channel, measured the same way from the manifest timing, is printed beside it (the data's
timing: what the model learns to imitate).

The figure includes the model's decision (when it chooses to answer, `voxlm eval dialogue`'s
response latency), waiting for the frame to fill, the server's queue, the step and loopback.

Bar (issue 5): median response latency at most 300 ms over the websocket on this machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from duplex_load import FRAME_S, HOP, LATENCY_BAR_MS, build_model, client  # noqa: E402

RATE = 16000
TAIL_S = 3.0  # s of silence streamed after the user channel, for the last answer


async def talk(url: str, user: np.ndarray, phase: float) -> dict:
    """One dialogue in one session: the user channel, then TAIL_S of silence -> duplex_load's
    `client` result: "start" (the microphone's, perf_counter s), "received" (the arrival of
    each audio message) and "audio" (float32 [M * HOP], the model's voice)."""
    frames = -(-user.size // HOP) + round(TAIL_S / FRAME_S)
    samples = np.zeros(frames * HOP, np.float32)
    samples[:user.size] = user
    session = await client(url, samples, frames * FRAME_S, phase, keep_audio=True)
    if session["info"].get("type") == "error":
        raise RuntimeError(f"the server answered an error: {session['info']}")
    return session


def heard_onsets(session: dict) -> list:
    """Wall times (perf_counter s) at which the model's voice starts, played as it arrives."""
    from voxlm.synth.align import mask_runs
    from voxlm.turntaking import FRAME_S as GRID_S, voice_activity

    audio, arrivals = session["audio"], session["received"]
    if not audio.size:
        return []
    hop = audio.size // len(arrivals)  # samples per message (one frame each)
    out = []
    for s, _ in mask_runs(voice_activity(audio)):
        sample = int(round(s * GRID_S * RATE))
        m = min(sample // hop, len(arrivals) - 1)
        out.append(arrivals[m] + (sample - m * hop) / RATE)
    return out


def fixed_clock(server):
    """Make `server` step on its own clock alone, every 80 ms whenever its clients' frames
    arrive (the server before 2026-12-08): the peer of the clock that follows them."""
    async def due(loop, deadline, backlog):
        await asyncio.sleep(max(deadline - loop.time(), 0.0))
        return deadline

    server._due = due


def run(model, rows, root: Path, clients: int, sampling, int8: bool, seed: int,
        fixed: bool = False) -> list:
    """Every row's dialogue through the server -> [{"id", "latency": [s or None per turn],
    "reference": [...]}]."""
    from tqdm import tqdm

    from voxlm.audio import load_audio
    from voxlm.eval.dialogue import answered_user_turns, onset_latencies, response_latencies
    from voxlm.server import BackgroundServer, DialogueServer, ServerConfig

    server = DialogueServer(model, ServerConfig(port=0, max_sessions=clients, seed=seed,
                                                int8=int8, sampling=sampling))
    if fixed:
        fixed_clock(server)
    phases = np.random.default_rng(seed).uniform(0, FRAME_S, len(rows))
    results = [None] * len(rows)
    bar = tqdm(total=len(rows), desc="dialogues", unit="dialogue")
    with BackgroundServer(server) as url:
        async def worker(queue):
            while not queue.empty():
                i = queue.get_nowait()
                row = rows[i]
                stereo = load_audio(root / row["audio"], mono=False)  # [T, 2]
                ends = [t["end"] for t in answered_user_turns(row)]
                session = await talk(url, stereo[:, 0].astype(np.float32).copy(), phases[i])
                heard_ends = [session["start"] + e for e in ends]  # the user's ends, wall clock
                results[i] = {"id": row["id"], "ends": ends,
                              "latency": onset_latencies(heard_onsets(session), heard_ends),
                              "reference": response_latencies(stereo, ends)}
                bar.update()

        async def everyone():
            queue = asyncio.Queue()
            for i in range(len(rows)):
                queue.put_nowait(i)
            await asyncio.gather(*[worker(queue) for _ in range(clients)])

        asyncio.run(everyone())
    bar.close()
    return results


def summary(values: list) -> str:
    from voxlm.eval.dialogue import latency_summary

    s = latency_summary(values)
    return (f"{s['answered']} of {s['turns']} turns answered, median {1000 * s['median_s']:.0f} "
            f"ms, p90 {1000 * s['p90_s']:.0f} ms, {100 * s['overlap_share']:.0f}% begun in overlap")


def main(argv=None):
    from voxlm.eval.dialogue import held_out_rows, latency_summary
    from voxlm.lm.generate import SamplingOptions

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/qa"))
    p.add_argument("--limit", type=int, default=40, help="held-out dialogues")
    p.add_argument("--clients", type=int, default=4, help="websocket clients at once")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    p.add_argument("--fp32", action="store_true", help="float32 LM weights instead of int8")
    p.add_argument("--checkpoint", default="default",
                   help="a dialogue model file or run folder ('default': the shipped one)")
    p.add_argument("--pad-temperature", type=float, default=SamplingOptions.pad_temperature)
    p.add_argument("--text-temperature", type=float, default=SamplingOptions.text_temperature)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-clock", action="store_true",
                   help="the server steps on its own clock alone (before 2026-12-08), not as "
                        "its clients' frames arrive")
    p.add_argument("--json", type=Path, help="write every latency here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = held_out_rows(args.data, args.limit)
    model = build_model(args.checkpoint)
    sampling = SamplingOptions(pad_temperature=args.pad_temperature,
                               text_temperature=args.text_temperature)
    print(f"websocket latency: {model.path}, {'fp32' if args.fp32 else 'int8'} LM, "
          f"{args.threads} threads; {len(rows)} dialogues of {args.data}, {args.clients} clients "
          f"at once; text temperature {sampling.text_temperature}, pad temperature "
          f"{sampling.pad_temperature}; {'fixed' if args.fixed_clock else 'following'} clock",
          flush=True)
    began = time.perf_counter()
    results = run(model, rows, args.data, args.clients, sampling, not args.fp32, args.seed,
                  args.fixed_clock)
    served = [v for r in results for v in r["latency"]]
    reference = [v for r in results for v in r["reference"]]
    print(f"\nover the websocket: {summary(served)}")
    print(f"reference dialogues (their own timing, no websocket): {summary(reference)}")
    median = latency_summary(served)["median_s"] * 1000
    print(f"- median response latency <= {LATENCY_BAR_MS:.0f} ms over the websocket: "
          f"{'pass' if median <= LATENCY_BAR_MS else 'FAIL'}: {median:.0f} ms "
          f"({time.perf_counter() - began:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "dialogues": results}, indent=1))


if __name__ == "__main__":
    main()
