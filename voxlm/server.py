"""`voxlm serve`: the dialogue runtime behind a websocket, and the browser page that talks to it.

    server = DialogueServer(load_dialogue_model(path), ServerConfig(port=8998))
    serve(server)                                  # blocks; Ctrl-C stops it
    with BackgroundServer(server) as url: ...      # on a thread of its own (tests, benchmarks)

Routes: `GET /` the page (voxlm/web/), `GET /web/<file>` its scripts, `GET /health` JSON,
WebSocket `/api/chat` (`?token=` when a token is set). The protocol is docs/PROTOCOL.md: the
first message is the byte 0x00; then 0x01 + PCM s16le mono 16 kHz both ways, 0x02 + UTF-8 inner
text from the server, JSON text messages for errors and control.

One clock steps every session together: every 80 ms (one codec frame) one `DuplexRuntime.step`
runs on a worker thread, so the event loop goes on reading input, and each session gets one
frame of the model's voice, silence included. The clock follows its clients' frames: a step
falls due the moment, from EARLY_S before its time to LATE_S after it, that every session has a
whole frame queued, and the clock moves to that moment; frames that came in earlier pull it
EARLY_S earlier, so in a few steps it finds the moment they arrive. A client's frames then wait
for the step about a millisecond instead of half a frame on average, and the clock follows a
client's sound card as it drifts. A session without its frame (silence, a slow link) delays the
step by LATE_S only and the clock keeps its time; so does a frame left over from the last step
(a client that sends several frames at once). A step that runs late is caught up at once; one
more than two frames late restarts the clock from now (counted in /health as late steps).
aiohttp is imported inside the functions that need it (the `serve` extra).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from .audio import SAMPLE_RATE
from .dialogue import FRAME_SECONDS, DuplexRuntime, SessionsFull
from .errors import VoxlmError
from .lm.generate import SamplingOptions

KIND_READY, KIND_AUDIO, KIND_TEXT = 0x00, 0x01, 0x02  # first byte of a binary message
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = {"app.js": "text/javascript", "worklets.js": "text/javascript", "style.css": "text/css"}
EARLY_S = 0.010  # s: how much earlier a step may fall due when every frame is in already
LATE_S = 0.005  # s: how long past its time a step may wait for the last session's frame
MAX_QUEUED = 250  # messages (about 10 s of frames) a client may fall behind before it is dropped
INSTALL_FIX = "install the serve extra: pip install -e '.[serve]'"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback: reachable from this machine only
    port: int = 8998  # 0: any free port
    token: str | None = None  # when set, /api/chat needs ?token=<it>
    max_sessions: int = 4  # sessions stepped together (batch rows)
    max_session_seconds: float = 1800.0  # a session ends after this long
    idle_seconds: float = 60.0  # a session whose client sends nothing for this long ends
    max_buffered_seconds: float = 1.0  # a client's queued audio beyond this drops its oldest
    max_message_bytes: int = 1 << 20  # a larger websocket message closes the connection
    sampling: SamplingOptions = SamplingOptions()
    seed: int | None = None  # seeds torch's generator once at start
    int8: bool = False  # the LM's matrix products with int8 weights (`voxlm serve` turns it on)


def _json(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields})


class _Client:
    """One websocket's session: what goes out (in order) and what it has sent and received."""

    def __init__(self, session, ws):
        self.session, self.ws = session, ws
        self.queue: asyncio.Queue = asyncio.Queue()  # bytes / str messages; None: close
        self.began = self.last_message = time.monotonic()
        self.text_sent: list = []
        self.leftover = b""  # an odd byte of PCM waiting for its pair
        self.peak = 0.0  # largest |sample| received
        self.frames_sent = 0
        self.ended = None  # why it ended, once it has

    def end(self, reason: str, error: bool = False):
        """Queue the last message and the close; nothing is queued after it."""
        if self.ended is None:
            self.ended = reason
            self.queue.put_nowait(_json("error", message=reason) if error
                                  else _json("end", reason=reason))
            self.queue.put_nowait(None)


class DialogueServer:
    def __init__(self, model, config: ServerConfig = ServerConfig()):
        if not 0 <= config.port <= 65535:
            raise VoxlmError(f"port {config.port}", "pass a TCP port in 0..65535 (0: any free one)")
        if not config.max_session_seconds > 0:
            raise VoxlmError(f"a session limit of {config.max_session_seconds} s",
                             "pass a positive number of seconds")
        if not config.idle_seconds > 0:
            raise VoxlmError(f"an idle limit of {config.idle_seconds} s",
                             "pass a positive number of seconds")
        self.model, self.config = model, config
        if config.seed is not None:
            import torch

            torch.manual_seed(config.seed)
        self.runtime = DuplexRuntime(model, config.max_sessions, config.sampling, int8=config.int8,
                                     max_buffered_seconds=config.max_buffered_seconds)
        self.clients: dict = {}  # session id -> _Client
        self.finished: deque = deque(maxlen=32)  # summaries of ended sessions (newest last)
        self.late_steps = 0
        self.url = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="voxlm-step")
        self._wake = None  # asyncio.Event: a session opened
        self._frame_in = None  # asyncio.Event: a session's queued input reached a whole frame
        self._runner = self._clock_task = None

    # ------------------------------------------------------------ life cycle

    def app(self):
        web = _aiohttp().web
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/web/{name}", self._static)
        app.router.add_get("/health", self._health)
        app.router.add_get("/api/chat", self._chat)
        return app

    async def start(self) -> str:
        """Listen; -> the page's URL. VoxlmError when the address cannot be had."""
        web = _aiohttp().web
        self._wake, self._frame_in = asyncio.Event(), asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except (OSError, OverflowError) as error:
            await self._runner.cleanup()
            self._runner = None
            raise VoxlmError(f"cannot listen on {self.config.host}:{self.config.port} "
                             f"({getattr(error, 'strerror', None) or error})", "pass another --port or --host, or "
                             "stop the program that holds it") from None
        port = self._runner.addresses[0][1]
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        self.url = f"http://{host}:{port}/"
        self._clock_task = asyncio.create_task(self._clock())
        return self.url

    async def stop(self):
        """Close every connection, stop the clock and the runtime (once is enough)."""
        for client in list(self.clients.values()):
            client.end("the server is stopping")
        if self._clock_task:
            self._clock_task.cancel()
            self._clock_task = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=True)
        self.runtime.shutdown()

    # ------------------------------------------------------------ the clock

    async def _clock(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not self.clients:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
            hop = self.runtime.hop  # frames queued beyond the one this step takes: a backlog
            backlog = any(s.buffered() >= 2 * hop for s in self.runtime.sessions())
            try:
                results = await loop.run_in_executor(self._executor, self.runtime.step)
            except Exception as error:  # a bug: the sessions end with it, the server goes on
                for client in list(self.clients.values()):
                    client.end(f"internal error: {type(error).__name__}: {error}", error=True)
                await asyncio.sleep(FRAME_SECONDS)
                continue
            for session_id, result in results.items():
                client = self.clients.get(session_id)
                if client is not None:
                    self._deliver(client, result)
            deadline += FRAME_SECONDS
            if deadline - loop.time() < -2 * FRAME_SECONDS:  # too late to catch up: start again
                self.late_steps += 1
                deadline = loop.time()
            deadline = await self._due(loop, deadline, backlog)

    def _frames_in(self) -> bool:
        """Every session has a whole frame of input queued."""
        sessions = self.runtime.sessions()
        return bool(sessions) and all(s.buffered() >= self.runtime.hop for s in sessions)

    async def _due(self, loop, deadline: float, backlog: bool) -> float:
        """Sleep until the next step, due at `deadline` -> the clock's time for it. With a
        frame left over from the last step (`backlog`): the deadline. Else the moment, from
        EARLY_S before the deadline to LATE_S after it, that every session has its frame in;
        else (no frame by then) the deadline itself."""
        await asyncio.sleep(max(deadline - EARLY_S - loop.time(), 0.0))
        if backlog:
            await asyncio.sleep(max(deadline - loop.time(), 0.0))
            return deadline
        while True:
            self._frame_in.clear()
            if self._frames_in():
                return loop.time()
            left = deadline + LATE_S - loop.time()
            if left <= 0:
                return deadline
            try:
                await asyncio.wait_for(self._frame_in.wait(), left)
            except asyncio.TimeoutError:
                return deadline

    def _deliver(self, client: _Client, result):
        if client.ended is not None:
            return
        pcm = np.clip(np.round(result.audio * 32767.0), -32768, 32767).astype("<i2")
        client.queue.put_nowait(bytes([KIND_AUDIO]) + pcm.tobytes())
        client.frames_sent += 1
        if result.text:
            client.queue.put_nowait(bytes([KIND_TEXT]) + result.text.encode("utf-8"))
            client.text_sent.append(result.text)
        if result.heard_word:  # a model with a listen head: a word of the user's it wrote down
            w = result.heard_word
            client.queue.put_nowait(_json("heard", word=w.w, start=round(w.start, 3),
                                          end=round(w.end, 3)))
        if client.frames_sent * FRAME_SECONDS >= self.config.max_session_seconds:
            self._close_session(client)
            client.end(f"the session reached its limit of {self.config.max_session_seconds:g} s")
        elif client.queue.qsize() > MAX_QUEUED:
            self._close_session(client)
            client.end("the connection is too slow for real-time audio", error=True)
        elif time.monotonic() - client.last_message > self.config.idle_seconds:
            self._close_session(client)
            client.end(f"nothing received for {self.config.idle_seconds:g} s; the session ended "
                       "(send audio, or a ping, to keep it open)")

    # ------------------------------------------------------------ routes

    async def _index(self, request):
        web = _aiohttp().web
        return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _static(self, request):
        web = _aiohttp().web
        name = request.match_info["name"]
        if name not in WEB_FILES:
            raise web.HTTPNotFound(text=f"no file {name!r}; the page's files are {sorted(WEB_FILES)}")
        return web.FileResponse(WEB_DIR / name, headers={"Content-Type": WEB_FILES[name],
                                                         "Cache-Control": "no-cache"})

    async def _health(self, request):
        web = _aiohttp().web
        return web.json_response({
            "status": "ok", "sessions": len(self.runtime.sessions()),
            "max_sessions": self.config.max_sessions, "token_required": self.config.token is not None,
            "model": self.model.info(), "latency_ms": self.runtime.latency.summary(),
            "late_steps": self.late_steps, "frame_seconds": FRAME_SECONDS})

    async def _chat(self, request):
        web = _aiohttp().web
        token = self.config.token
        if token is not None and not hmac.compare_digest(request.query.get("token", "").encode(),
                                                         token.encode()):
            return web.json_response({"type": "error", "message": "missing or wrong token; "
                                      "connect to /api/chat?token=<the server's token>"}, status=401)
        origin = request.headers.get("Origin")
        if origin and urlsplit(origin).netloc != request.host:
            return web.json_response({"type": "error", "message": f"origin {origin} is not this "
                                      "server; open the page this server serves"}, status=403)
        ws = web.WebSocketResponse(max_msg_size=self.config.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        try:
            session = self.runtime.open()
        except SessionsFull as error:
            await ws.send_str(_json("error", message=str(error)))
            await ws.close(code=1013, message=b"all sessions in use")
            return ws
        client = _Client(session, ws)
        client.queue.put_nowait(bytes([KIND_READY]))
        client.queue.put_nowait(_json("info", session=session.id, sample_rate=SAMPLE_RATE,
                                      frame_samples=self.runtime.hop,
                                      max_session_seconds=self.config.max_session_seconds))
        self.clients[session.id] = client
        self._wake.set()
        writer = asyncio.create_task(self._write(client))
        try:
            await self._read(client)
        finally:
            self._close_session(client)
            if client.ended is None:
                client.ended = "the client disconnected"
            client.queue.put_nowait(None)
            try:
                await asyncio.wait_for(writer, timeout=2.0)
            except Exception:  # a writer stuck on a dead socket
                writer.cancel()
        return ws

    # ------------------------------------------------------------ one connection

    async def _read(self, client: _Client):
        from aiohttp import WSMsgType

        async for message in client.ws:
            if client.ended is not None:
                break
            client.last_message = time.monotonic()
            if message.type == WSMsgType.BINARY:
                self._binary(client, message.data)
            elif message.type == WSMsgType.TEXT:
                self._control(client, message.data)
            else:
                break

    def _binary(self, client: _Client, data: bytes):
        if not data:
            client.queue.put_nowait(_json("error", message="empty message; send 0x01 followed "
                                          "by PCM s16le mono 16 kHz samples"))
            return
        if data[0] != KIND_AUDIO:
            client.queue.put_nowait(_json("error", message=f"unknown message kind 0x{data[0]:02x};"
                                          " send 0x01 followed by PCM s16le mono 16 kHz samples"))
            return
        pcm = client.leftover + data[1:]
        whole = len(pcm) - len(pcm) % 2
        client.leftover = pcm[whole:]
        samples = np.frombuffer(pcm[:whole], "<i2").astype(np.float32) / 32768.0
        if samples.size:
            client.peak = max(client.peak, float(np.abs(samples).max()))
            client.session.feed(samples)
            if client.session.buffered() >= self.runtime.hop:
                self._frame_in.set()

    def _control(self, client: _Client, text: str):
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "ping":
            session = client.session
            client.queue.put_nowait(_json(
                "pong", t=message.get("t"), input_buffer_ms=round(
                    1000 * session.buffered() / SAMPLE_RATE, 1),
                queued_messages=client.queue.qsize(), underruns=session.underruns,
                step_ms=self.runtime.latency.summary()["step"]["p50_ms"]))
        elif kind == "stop":
            self._close_session(client)
            client.end("stopped by the client")
        else:
            client.queue.put_nowait(_json("error", message=f"unknown control message {text[:80]!r};"
                                          ' send {"type": "ping"} or {"type": "stop"}'))

    async def _write(self, client: _Client):
        try:
            while True:
                message = await client.queue.get()
                if message is None:
                    break
                if isinstance(message, str):
                    await client.ws.send_str(message)
                else:
                    await client.ws.send_bytes(message)
        except (ConnectionError, RuntimeError):  # the client went away mid-send
            pass
        finally:
            self._close_session(client)
            await client.ws.close()

    def _close_session(self, client: _Client):
        """Free the client's row (once) and keep a summary of what it sent and received."""
        if self.clients.get(client.session.id) is not client:
            return
        del self.clients[client.session.id]
        self.runtime.close(client.session)
        session = client.session
        self.finished.append({
            "session": session.id, "seconds": round(time.monotonic() - client.began, 3),
            "frames_sent": client.frames_sent, "text": "".join(client.text_sent),
            "input_samples": session.received, "input_peak": round(client.peak, 4),
            "underruns": session.underruns, "dropped_samples": session.dropped})


def _aiohttp():
    try:
        import aiohttp.web  # noqa: F401
    except ImportError:
        raise VoxlmError("voxlm serve needs aiohttp", INSTALL_FIX) from None
    import aiohttp

    return aiohttp


def serve(server: DialogueServer, announce=print):
    """Run the server until Ctrl-C (KeyboardInterrupt reaches the caller)."""
    async def main():
        try:
            announce(await server.start())
            await asyncio.Event().wait()
        finally:
            await server.stop()

    _aiohttp()
    asyncio.run(main())


class BackgroundServer:
    """A DialogueServer on an event loop of its own thread. `with BackgroundServer(s) as url:`;
    `call(coroutine function)` runs something on that loop and returns its result."""

    def __init__(self, server: DialogueServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="voxlm-serve")

    def __enter__(self) -> str:
        _aiohttp()
        self._thread.start()
        try:
            return self.call(self.server.start)
        except BaseException:
            self._finish()
            raise

    def call(self, function, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(function(), self.loop).result(timeout)

    def __exit__(self, *exc):
        try:
            self.call(self.server.stop)
        finally:
            self._finish()

    def _finish(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
