"""`voxlm serve` (voxlm/server.py) against docs/PROTOCOL.md, on a real server on loopback with
a tiny random dialogue model: the ready byte, audio and text kinds, errors that do not end the
connection, ping and stop, the token, the origin check, the session limit, a full server and a
client that vanishes mid-stream. Sessions run in real time (80 ms a frame), so each is short."""
import asyncio
import json
import random
import socket
import time

import numpy as np
import pytest
import torch

from duplex_helpers import HOP, speech, tiny_model

aiohttp = pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")
from voxlm.errors import VoxlmError  # noqa: E402
from voxlm.server import BackgroundServer, DialogueServer, ServerConfig  # noqa: E402

torch.set_num_threads(1)
AUDIO, TEXT = aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("server")


def running(folder, listen: bool = False, **config):
    """A server on a free loopback port; `with running(...) as (server, url):`. `listen`: a
    model with a listen head."""
    server = DialogueServer(tiny_model(folder, listen=listen), ServerConfig(port=0, **config))

    class Context:
        def __enter__(self):
            self.background = BackgroundServer(server)
            return server, self.background.__enter__()

        def __exit__(self, *exc):
            self.background.__exit__(*exc)

    return Context()


def pcm(samples: np.ndarray) -> bytes:
    return b"\x01" + (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def collect(ws, seconds: float) -> list:
    """Messages for `seconds` (or until the close): [(type, data)]."""
    out, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            message = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            break
        out.append((message.type, message.data))
        if message.type in CLOSED:
            break
    return out


def controls(messages) -> list:
    return [json.loads(data) for kind, data in messages if kind == TEXT]


def run(coroutine):
    return asyncio.run(coroutine)


def test_handshake_audio_text_and_stop(folder):
    with running(folder) as (server, url):
        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                first = await ws.receive(timeout=5)
                assert (first.type, first.data) == (AUDIO, b"\x00")  # ready: the first message
                info = json.loads((await ws.receive(timeout=5)).data)
                assert info["type"] == "info" and info["sample_rate"] == 16000
                assert info["frame_samples"] == HOP
                await ws.send_bytes(pcm(speech(1.0)))
                heard = await collect(ws, 1.2)
                await ws.send_str(json.dumps({"type": "stop"}))
                heard += await collect(ws, 3.0)
                return heard

        messages = run(talk())
    binary = [data for kind, data in messages if kind == AUDIO]
    audio = [m for m in binary if m[0] == 0x01]
    text = "".join(m[1:].decode("utf-8") for m in binary if m[0] == 0x02)
    assert {m[0] for m in binary} <= {0x01, 0x02}
    assert len(audio) >= 10 and all(len(m) == 1 + 2 * HOP for m in audio)  # one frame each
    assert any(np.frombuffer(m[1:], "<i2").any() for m in audio)  # the model's voice, not only 0
    assert text.strip() and controls(messages)[-1] == {"type": "end",
                                                       "reason": "stopped by the client"}
    assert messages[-1][0] in CLOSED
    summary = server.finished[-1]
    assert summary["text"] == text  # everything sent before "end" arrived
    assert summary["input_samples"] == 16000 and summary["input_peak"] > 0.2
    assert summary["frames_sent"] == len(audio)


def test_a_listen_head_sends_the_words_it_heard(folder):
    """A model with a listen head sends {"type": "heard"} words with their times, in order; the
    model above, without one, sends none (its last control message is "end")."""
    with running(folder, listen=True) as (server, url):
        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                await ws.receive(timeout=5)
                await ws.send_bytes(pcm(speech(1.5)))
                heard = await collect(ws, 1.6)
                await ws.send_str(json.dumps({"type": "stop"}))
                return heard + await collect(ws, 3.0)

        messages = run(talk())
    words = [m for m in controls(messages) if m["type"] == "heard"]
    assert words and all(set(m) == {"type", "word", "start", "end"} and m["word"] for m in words)
    assert all(0 <= m["start"] <= m["end"] <= 4.0 for m in words)
    assert [m["start"] for m in words] == sorted(m["start"] for m in words)
    assert controls(messages)[-1]["type"] == "end"


def test_bad_messages_get_errors_not_a_disconnect(folder):
    with running(folder) as (server, url):
        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                await ws.receive(timeout=5)
                for bad in (b"\x07abc", b"", b"\x00"):
                    await ws.send_bytes(bad)
                for bad in ("not json", json.dumps({"type": "dance"}), "[1, 2]"):
                    await ws.send_str(bad)
                await ws.send_bytes(b"\x01\x10")  # half a sample, then the other half
                await ws.send_bytes(b"\x01\x00")
                await ws.send_str(json.dumps({"type": "ping", "t": 12.5}))
                first = await collect(ws, 0.6)
                later = await collect(ws, 0.4)  # still open, still sending audio
                await ws.send_str(json.dumps({"type": "stop"}))
                await collect(ws, 2.0)
                return first, later

        first, later = run(talk())
    found = controls(first)
    errors = [m["message"] for m in found if m["type"] == "error"]
    assert len(errors) == 6, errors
    assert "unknown message kind 0x07" in errors[0] and "send 0x01" in errors[0]
    assert errors[1].startswith("empty message") and "0x00" in errors[2]
    assert all("unknown control message" in e for e in errors[3:])
    pong = [m for m in found if m["type"] == "pong"]
    assert pong and pong[0]["t"] == 12.5 and {"input_buffer_ms", "step_ms"} <= set(pong[0])
    assert sum(1 for kind, data in later if kind == AUDIO and data[0] == 0x01) >= 3
    assert server.finished[-1]["input_samples"] == 1  # the two halves made one sample


def fuzzed_messages(count: int, seed: int = 0) -> list:
    """[(is_binary, payload, expected reply kind)]: random kinds and lengths of binary messages,
    random text (JSON or not, any unicode), pings with any "t"; never "stop"."""
    rng = random.Random(seed)
    values = [None, True, 0, -1, 1e308, "x" * 300, "\u00e9\U0001f600\x00", [], {}, [{"a": [1]}]]
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.4:  # binary: any first byte, any length (odd ones too)
            payload = bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 3000))
            if rng.random() < 0.05:
                payload = b""
            good = payload[:1] == b"\x01"
            out.append((True, payload, "audio" if good else "error"))
        elif roll < 0.55:
            out.append((False, json.dumps({"type": "ping", "t": rng.choice(values)}), "pong"))
        else:  # text that is not a control message
            choice = rng.random()
            if choice < 0.3:
                text = "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(0, 200)))
            elif choice < 0.7:
                text = json.dumps({"type": rng.choice(values + ["dance", "PING", "stop "]),
                                   "t": rng.choice(values)})
            else:
                text = json.dumps(rng.choice(values))
            out.append((False, text, "error"))
    return out


def test_fuzzed_messages_get_answers_and_the_session_lives(folder):
    messages = fuzzed_messages(300)
    with running(folder) as (server, url):
        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                await ws.receive(timeout=5)
                for binary, payload, _ in messages:
                    await (ws.send_bytes(payload) if binary else ws.send_str(payload))
                replies = await collect(ws, 1.5)
                async with http.get(url + "health") as response:
                    health = json.loads(await response.text())
                await ws.send_str(json.dumps({"type": "stop"}))
                await collect(ws, 2.0)
                return replies, health

        replies, health = run(talk())
    found = controls(replies)
    expected = [kind for _, _, kind in messages]
    assert sum(m["type"] == "error" for m in found) == expected.count("error")
    assert sum(m["type"] == "pong" for m in found) == expected.count("pong")
    assert not any(kind in CLOSED for kind, _ in replies)  # never disconnected
    assert sum(1 for kind, data in replies if kind == AUDIO and data[:1] == b"\x01") >= 5
    assert health["status"] == "ok" and health["sessions"] == 1
    assert not server.clients  # the stop freed the slot


def test_token_and_origin(folder):
    with running(folder, token="s3cret") as (server, url):
        async def attempt(path, **headers):
            async with aiohttp.ClientSession() as http:
                try:
                    async with http.ws_connect(url + path, headers=headers) as ws:
                        return (await ws.receive(timeout=5)).data
                except aiohttp.WSServerHandshakeError as error:
                    return error.status

        assert run(attempt("api/chat")) == 401
        assert run(attempt("api/chat?token=wrong")) == 401
        assert run(attempt("api/chat?token=s3cret")) == b"\x00"
        assert run(attempt("api/chat?token=s3cret", Origin="http://elsewhere.example")) == 403
        host = url.split("//")[1].rstrip("/")
        assert run(attempt("api/chat?token=s3cret", Origin=f"http://{host}")) == b"\x00"


def test_full_server_refuses_and_a_vanished_client_frees_its_slot(folder):
    with running(folder, max_sessions=1) as (server, url):
        host, port = url.split("//")[1].rstrip("/").split(":")

        async def vanish():
            """A raw websocket handshake, some audio out, then the TCP connection cut."""
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /api/chat HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() +
                         b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            await writer.drain()
            assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(5000)  # ready, info and audio frames are arriving
            writer.transport.abort()

        async def second_is_refused():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                messages = await collect(ws, 3.0)
            return controls(messages), messages[-1][0]

        async def health():
            async with aiohttp.ClientSession() as http, http.get(url + "health") as response:
                return await response.json()

        async def scenario():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                assert (await ws.receive(timeout=5)).data == b"\x00"
                refused, last = await second_is_refused()
                assert refused == [{"type": "error", "message": "all 1 sessions are in use; "
                                    "try again when one ends, or allow more sessions"}]
                assert last in CLOSED
                assert (await health())["sessions"] == 1
            for _ in range(50):  # a clean close frees the slot
                if (await health())["sessions"] == 0:
                    break
                await asyncio.sleep(0.05)
            await vanish()
            for _ in range(50):  # and so does a client that vanishes mid-stream
                if (await health())["sessions"] == 0:
                    break
                await asyncio.sleep(0.05)
            state = await health()
            assert state["sessions"] == 0 and state["max_sessions"] == 1
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                assert (await ws.receive(timeout=5)).data == b"\x00"  # the slot is free again
            return state

        state = run(scenario())
    assert state["latency_ms"]["steps"] > 0 and state["model"]["frame_samples"] == HOP
    assert server.finished[-2]["frames_sent"] > 0


def test_session_limit_ends_the_session(folder):
    with running(folder, max_session_seconds=0.4) as (server, url):
        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                return await collect(ws, 5.0)

        messages = run(talk())
    assert controls(messages)[-1] == {"type": "end",
                                      "reason": "the session reached its limit of 0.4 s"}
    assert messages[-1][0] in CLOSED
    assert sum(1 for kind, data in messages if kind == AUDIO and data[0] == 0x01) == 5


def test_idle_client_is_ended_and_a_talking_one_is_not(folder):
    with running(folder, idle_seconds=0.5) as (server, url):
        async def idle():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                return await collect(ws, 4.0)

        async def talking():  # pings every 0.2 s: never idle for 0.5 s
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                for _ in range(8):
                    await ws.send_str('{"type": "ping"}')
                    await asyncio.sleep(0.2)
                await ws.send_str('{"type": "stop"}')
                return await collect(ws, 4.0)

        began = time.monotonic()
        messages = run(idle())
        waited = time.monotonic() - began
        talked = run(talking())
    end = controls(messages)[-1]
    assert end["type"] == "end" and "nothing received for 0.5 s" in end["reason"], end
    assert 0.5 <= waited < 3.0 and messages[-1][0] in CLOSED
    assert controls(talked)[-1] == {"type": "end", "reason": "stopped by the client"}
    assert sum(1 for c in controls(talked) if c["type"] == "pong") == 8


def test_page_health_and_files(folder):
    with running(folder) as (server, url):
        async def fetch():
            async with aiohttp.ClientSession() as http:
                out = {}
                for path in ("", "health", "web/app.js", "web/worklets.js", "web/style.css",
                             "web/nothing.js", "web/..%2Fserver.py"):
                    async with http.get(url + path) as response:
                        out[path] = (response.status, response.content_type, await response.text())
                return out

        pages = run(fetch())
    status, kind, html = pages[""]
    assert status == 200 and kind == "text/html" and 'id="transcript"' in html
    assert 'src="web/app.js"' in html
    assert pages["web/app.js"][:2] == (200, "text/javascript")
    assert "registerProcessor" in pages["web/worklets.js"][2]
    assert pages["web/nothing.js"][0] == 404 and pages["web/..%2Fserver.py"][0] == 404
    health = json.loads(pages["health"][2])
    assert health["status"] == "ok" and health["sessions"] == 0 and health["max_sessions"] == 4
    assert health["token_required"] is False and health["frame_seconds"] == 0.08


def test_port_in_use_and_bad_config(folder):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = DialogueServer(tiny_model(folder), ServerConfig(port=port))
        with pytest.raises(VoxlmError, match=f"cannot listen on 127.0.0.1:{port}.*another --port"):
            with BackgroundServer(server):
                pass
    finally:
        holder.close()
    with pytest.raises(VoxlmError, match="a TCP port in 0..65535"):
        DialogueServer(tiny_model(folder), ServerConfig(port=-1))
    with pytest.raises(VoxlmError, match="positive number of seconds"):
        DialogueServer(tiny_model(folder), ServerConfig(max_session_seconds=0))
    with pytest.raises(VoxlmError, match="an idle limit of -1 s; pass a positive number"):
        DialogueServer(tiny_model(folder), ServerConfig(idle_seconds=-1))


def log_steps(server) -> list:
    """Wrap the runtime's step to log when each began (perf_counter s)."""
    times, step = [], server.runtime.step

    def logged():
        times.append(time.perf_counter())
        return step()

    server.runtime.step = logged
    return times


async def send_frames(ws, frames: np.ndarray, at: list) -> list:
    """Send frames [N, HOP] at perf_counter times `at` [N] -> the times each left."""
    sent = []
    for frame, t in zip(frames, at):
        await asyncio.sleep(max(t - time.perf_counter(), 0.0))
        await ws.send_bytes(pcm(frame))
        sent.append(time.perf_counter())
    return sent


def waits(steps: list, sent: list, frames: range) -> list:
    """For each frame index in `frames`: from its sending to the first step after it (s)."""
    return [min(t for t in steps if t > sent[k]) - sent[k] for k in frames]


def test_the_clock_steps_as_a_clients_frames_arrive(folder):
    """A client's frames are taken within a few ms of arriving, not half a frame later on
    average: the clock moves to them, and again when they come 40 ms later than before."""
    with running(folder) as (server, url):
        steps = log_steps(server)

        async def talk():
            async with aiohttp.ClientSession() as http, http.ws_connect(url + "api/chat") as ws:
                assert (await ws.receive(timeout=5)).data == b"\x00"
                frames = speech(3.8)[:47 * HOP].reshape(47, HOP)
                t0 = time.perf_counter() + 0.03
                at = [t0 + 0.08 * k + (0.04 if k >= 22 else 0.0) for k in range(47)]
                sent = await send_frames(ws, frames, at)
                await asyncio.sleep(0.2)
                return sent

        sent = run(talk())
    first, second = waits(steps, sent, range(12, 22)), waits(steps, sent, range(36, 47))
    assert np.median(first) < 0.006 and np.median(second) < 0.006, (first, second)
    spread = [t for t in steps if sent[0] <= t <= sent[-1]]  # real time, not faster
    assert abs(len(spread) - len(sent)) <= 2
    assert server.finished[-1]["underruns"] <= 3  # the clock's first steps, and the shift


def test_the_clock_keeps_time_for_a_silent_session_and_frames_sent_in_pairs(folder):
    """A session that sends nothing does not slow the clock, nor does one that sends two
    frames at a time make it run short of input."""
    with running(folder, max_sessions=2) as (server, url):
        steps = log_steps(server)

        async def talk():
            async with aiohttp.ClientSession() as http, \
                    http.ws_connect(url + "api/chat") as silent, \
                    http.ws_connect(url + "api/chat") as ws:
                for w in (silent, ws):
                    assert (await w.receive(timeout=5)).data == b"\x00"
                pairs = speech(2.7)[:16 * 2 * HOP].reshape(16, 2 * HOP)
                t0 = time.perf_counter() + 0.03
                sent = await send_frames(ws, pairs, [t0 + 0.16 * k for k in range(16)])
                await asyncio.sleep(0.2)
                await ws.send_str(json.dumps({"type": "stop"}))
                await collect(ws, 1.0)
                return sent

        sent = run(talk())
    during = [t for t in steps if sent[0] <= t <= sent[-1]]
    period = np.diff(during)
    assert abs(len(during) - 2 * (len(sent) - 1)) <= 2 and abs(period.mean() - 0.08) < 0.004
    talker = [f for f in server.finished if f["input_samples"] > 0][-1]
    assert talker["underruns"] <= 2, talker  # before its first pair; none once it streams
