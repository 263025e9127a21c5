"""python benchmarks/duplex_faults.py [--sessions 8] [--seconds 180] [--threads 2] [--checkpoint default]

Fault test of `voxlm serve` on loopback: N clients talk in real time (as in duplex_load.py) while
faulty clients come and go on one more session slot, one fault after another, for the whole run.
It reports whether the N good clients kept their real-time stream, and for each kind of fault
how many were tried and how many the server handled as it should:

- malformed: a session that sends an unknown message kind, an empty binary message, text that
  is not JSON and JSON of an unknown type; handled when each of the four gets an error message
  and the session then stops cleanly on {"type": "stop"};
- oversized: a session that sends one message over the server's max_message_bytes; handled when
  the server closes the websocket (code 1009, message too big);
- killed: a separate client process (stdlib sockets only, so it starts in milliseconds) that
  streams real-time audio for 0.3 to 2 s and is then killed with SIGKILL, without a close
  frame; handled when its slot is free again within 1 s of the kill;
- crowd: two connections at once while only the fault slot is free; handled when one gets the
  ready byte and the other a JSON error and close code 1013 (all sessions in use).

After each fault the script waits until the server holds exactly the N good sessions again. It
stops by itself (every wait has a timeout) and always closes the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from duplex_load import FRAME_S, describe, measure, parse_with_model, table  # noqa: E402

KILLED_CLIENT = r'''
import base64, math, os, socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
sock = socket.create_connection((host, port), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
sock.sendall((f"GET /api/chat HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n").encode())
reply = b""
while b"\r\n\r\n" not in reply:
    reply += sock.recv(4096)
if b" 101 " not in reply.split(b"\r\n")[0]:
    print("refused", flush=True)
    sys.exit(0)
print("connected", flush=True)
tone = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 170 * n / 16000)))
                for n in range(1280))
payload = b"\x01" + tone
mask = os.urandom(4)
masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
frame = bytes([0x82, 0x80 | 126]) + struct.pack(">H", len(payload)) + mask + masked
start = time.time()
for k in range(100000):  # streams until it is killed
    time.sleep(max(0.0, start + (k + 1) * 0.08 - time.time()))
    sock.sendall(frame)
'''


async def wait_sessions(server, count: int, timeout: float) -> float | None:
    """Seconds until the server holds `count` sessions, or None after `timeout`."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if len(server.clients) == count:
            return time.perf_counter() - began
        await asyncio.sleep(0.01)
    return None


async def malformed(http, url) -> bool:
    import aiohttp

    async with http.ws_connect(url + "api/chat", timeout=10) as ws:
        if (await ws.receive(timeout=10)).data != b"\x00":
            return False
        await ws.send_bytes(b"\x07junk")
        await ws.send_bytes(b"")
        await ws.send_str("not json {")
        await ws.send_str('{"type": 5}')
        await ws.send_str('{"type": "stop"}')
        errors, ended = 0, False
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                kind = json.loads(message.data).get("type")
                errors += kind == "error"
                ended |= kind == "end"
            elif message.type != aiohttp.WSMsgType.BINARY:
                break
        return errors == 4 and ended


async def oversized(http, url, max_bytes: int) -> bool:
    async with http.ws_connect(url + "api/chat", timeout=10, max_msg_size=0) as ws:
        if (await ws.receive(timeout=10)).data != b"\x00":
            return False
        await ws.send_bytes(b"\x01" + bytes(max_bytes + 2))
        try:
            while not ws.closed:
                await ws.receive(timeout=10)
        except asyncio.TimeoutError:
            return False
        return ws.close_code == 1009


async def killed(url, server, good: int, rng) -> bool:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_CLIENT, host, port, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        if line.strip() != b"connected" or await wait_sessions(server, good + 1, 5) is None:
            return False
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        process.send_signal(signal.SIGKILL)
        return await wait_sessions(server, good, 1.0) is not None
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def crowd(http, url) -> bool:
    import aiohttp

    async def one():
        async with http.ws_connect(url + "api/chat", timeout=10) as ws:
            first = await ws.receive(timeout=10)
            if first.type == aiohttp.WSMsgType.BINARY and first.data == b"\x00":
                await asyncio.sleep(0.5)  # hold the slot while the other is refused
                await ws.send_str('{"type": "stop"}')
                async for _ in ws:
                    pass
                return "ready"
            if first.type == aiohttp.WSMsgType.TEXT and json.loads(first.data)["type"] == "error":
                await ws.receive(timeout=10)  # the close
                return "refused" if ws.close_code == 1013 else "odd close"
            return "odd"

    return sorted(await asyncio.gather(one(), one())) == ["ready", "refused"]


def troublemaker(good: int, seed: int = 0):
    """-> async (url, server, seconds) -> {kind: [tried, handled]}, the faults of one run."""
    async def run(url, server, seconds) -> dict:
        import aiohttp

        rng = random.Random(seed)
        counts = {k: [0, 0] for k in ("malformed", "oversized", "killed", "crowd")}
        await wait_sessions(server, good, 10)  # the good clients are in
        end = time.perf_counter() + seconds - 2
        async with aiohttp.ClientSession() as http:
            while time.perf_counter() < end:
                kind = rng.choice(list(counts))
                try:
                    ok = await asyncio.wait_for(
                        malformed(http, url) if kind == "malformed"
                        else oversized(http, url, server.config.max_message_bytes)
                        if kind == "oversized" else killed(url, server, good, rng)
                        if kind == "killed" else crowd(http, url), timeout=20)
                except (asyncio.TimeoutError, aiohttp.ClientError) as error:
                    print(f"  fault {kind}: {error!r}", file=sys.stderr)
                    ok = False
                ok = ok and await wait_sessions(server, good, 2.0) is not None
                counts[kind][0] += 1
                counts[kind][1] += bool(ok)
                await asyncio.sleep(rng.uniform(0.2, 1.0))
        return counts

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=8, help="good clients")
    p.add_argument("--seconds", type=float, default=180.0, help="each good client's session")
    args, model = parse_with_model(p, argv)
    print(f"duplex faults: {describe(model, args)}; {args.sessions} good clients + 1 fault slot; "
          f"{args.seconds:g} s; loopback", flush=True)
    began = time.perf_counter()
    row = measure(model, args.sessions, args.seconds, not args.fp32,
                  faults=troublemaker(args.sessions))
    print(f"  ran {time.perf_counter() - began:.0f} s", file=sys.stderr)
    print()
    print(table([row]))
    print()
    print("| fault | tried | handled |\n|---|---|---|")
    for kind, (tried, handled) in row["faults"].items():
        print(f"| {kind} | {tried} | {handled} |")
    tried = sum(t for t, _ in row["faults"].values())
    handled = sum(h for _, h in row["faults"].values())
    print(f"\n- the {args.sessions} good clients kept real time (no late step, >= 98% of "
          f"{1 / FRAME_S:g} frames/s each): {'yes' if row['real_time'] else 'NO'}")
    print(f"- faults handled: {handled} of {tried}")
    return 0 if row["real_time"] and handled == tried else 1


if __name__ == "__main__":
    sys.exit(main())
