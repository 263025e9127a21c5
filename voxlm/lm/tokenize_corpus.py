"""Corpus -> token shards: the codec's codes and the text tokenizer's ids of every manifest item.

    voxlm lm tokenize --data data/corpus --out data/tokens [--codec CKPT] [--tokenizer tok.model]

Worker processes (one torch thread each) encode items in parallel; each finished item is one
file under parts/, written atomically, so a killed run resumes where it stopped and never redoes
an item. When every item is done the parts are packed into one memmapped codes file and an
index. Dialogues (stereo, channel 0 = user, 1 = assistant) give one code stream per channel.

TOKENS_DIR:
    tokens.json      header: codec (config, sha256), tokenizer (name, vocab_size, sha256),
                     frame_rate, n_q, codebook_size; a resume must use the same codec and tokenizer
    tokenizer.model  the text tokenizer as used (sentencepiece)
    codes.npy        int16 [R, K]: every item's frames one after another (`np.load(mmap_mode="r")`)
    index.jsonl      one item a line: {"id", "split", "duration", "text", "offset", "frames",
                     "channels", "words": [{"w", "start", "end", "channel", "ids"}]}.
                     Channel c of an item is codes[offset + c * frames: offset + (c + 1) * frames]
                     [T, K]. Word times are seconds (frame = floor(start * frame_rate)), "ids" the
                     tokenizer's ids of the word (after a space unless first in its channel),
                     as `streams.tokenize_words` gives them
    parts/ID.npz     per item: codes [C, T, K] int16 and its index row (the resume state)
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..data import file_mode, read_manifest, remove_stale_temps, write_atomic, write_json
from ..errors import VoxlmError

FORMAT_VERSION = 1
TOKENIZE_FIX = "make them with: voxlm lm tokenize --data CORPUS --out DIR"


class TokenizeResult(NamedTuple):
    out: Path  # the tokens folder
    items: int  # items in the shards
    encoded: int  # items encoded by this call (the rest were already done)
    frames: int  # codec frames over all items and channels
    seconds: float  # wall time of this call


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def codec_file(codec) -> Path:
    """The model file behind --codec (a file or a run folder; None: the shipped codec)."""
    from ..codec.model import default_codec_path

    path = Path(codec) if codec is not None else default_codec_path()
    return path / "model.safetensors" if path.is_dir() else path


def codec_codes_of(codec) -> list:
    """The sha256 of the codec files whose codes the codec file behind `codec` keeps (recorded
    by `codec train --decoder-only`, which trains only the decoding side): [] for most files."""
    from safetensors import safe_open

    try:
        with safe_open(str(codec_file(codec)), framework="pt") as handle:
            extra = json.loads((handle.metadata() or {}).get("extra", "{}"))
    except Exception:  # unreadable: loading the codec names the problem
        return []
    return [str(s) for s in extra.get("codes_of", [])] if isinstance(extra, dict) else []


def codec_code_ids(codec) -> set:
    """{sha256 of the codec file} and those whose codes it keeps: two codec files make the
    same codes when their sets meet."""
    return {sha256_bytes(codec_file(codec).read_bytes()), *codec_codes_of(codec)}


def recorded_code_ids(sha256: str | None, codes_of=()) -> set:
    """The same set from a record (a tokens header's or an LM's): empty when nothing is
    recorded, which then checks nothing."""
    return {sha256, *codes_of} if sha256 else set()


def part_path(out: Path, item_id: str) -> Path:
    return out / "parts" / f"{item_id}.npz"


# ---------------------------------------------------------------- one item (in a worker)

_WORKER: dict = {}


def _init_worker(codec_path: str, tokenizer_proto: bytes, tokenizer_name: str, threads: int):
    import torch

    from ..codec.model import load_codec
    from .tokenizer import Tokenizer

    if threads:
        torch.set_num_threads(threads)
    _WORKER.update(codec=load_codec(codec_path), tokenizer=Tokenizer(tokenizer_proto, tokenizer_name))


def item_words(row: dict, frames: int, frame_rate: float, tokenizer) -> list:
    """Manifest words -> [{"w", "start", "end", "channel", "ids"}] in time order; words that
    start after the audio or encode to no ids are left out."""
    out, seen = [], set()
    end = frames / frame_rate
    for word in sorted(row["words"], key=lambda w: (w["start"], w.get("channel", 0))):
        channel = int(word.get("channel", 0))
        if word["start"] > end:
            continue
        ids = tokenizer.encode(word["w"] if channel not in seen else " " + word["w"])
        if not ids:
            continue
        seen.add(channel)
        out.append({"w": word["w"], "start": float(word["start"]),
                    "end": float(min(max(word["end"], word["start"]), end)),
                    "channel": channel, "ids": [int(i) for i in ids]})
    return out


def encode_item(row: dict, corpus: Path, codec, tokenizer) -> tuple:
    """One manifest row -> (codes [C, T, K] int16, index row without offset). Dialogue rows
    ("turns", stereo audio) give C = 2, others C = 1."""
    from ..audio import load_audio
    from ..codec.files import encode_audio

    dialogue = "turns" in row
    audio = load_audio(corpus / row["audio"], mono=not dialogue)  # [N] or [N, C]
    if dialogue and (audio.ndim != 2 or audio.shape[1] != 2):
        raise VoxlmError(f"{row['audio']}: dialogue {row['id']} has {audio.shape[-1]} channel(s)",
                         "dialogues are stereo wav files (channel 0 user, 1 assistant)")
    channels = audio.T if dialogue else audio[None]  # [C, N]
    codes = np.stack([encode_audio(codec, np.ascontiguousarray(channel)).T
                      for channel in channels])  # [C, T, K]
    if codes.max(initial=0) > np.iinfo(np.int16).max:
        raise VoxlmError(f"codebook size {codec.config.codebook_size} does not fit int16 shards",
                         "use a codec with at most 32768 codes per codebook")
    frames = codes.shape[1]
    words = item_words(row, frames, codec.config.frame_rate, tokenizer)
    index = {"id": row["id"], "split": row["split"], "duration": row["duration"],
             "text": row["text"], "frames": frames, "channels": len(channels), "words": words}
    return codes.astype(np.int16), index


def _work(job: tuple) -> tuple:
    """In a worker: encode one item and write its part file atomically."""
    row, corpus, out = job
    codes, index = encode_item(row, Path(corpus), _WORKER["codec"], _WORKER["tokenizer"])
    buffer = io.BytesIO()
    np.savez(buffer, codes=codes, index=np.array(json.dumps(index)))
    write_atomic(part_path(Path(out), row["id"]), buffer.getvalue())
    return row["id"], int(codes.shape[0] * codes.shape[1])


def read_part(path: Path) -> tuple:
    """-> (codes [C, T, K] int16, index row)."""
    with np.load(path, allow_pickle=False) as part:
        return part["codes"], json.loads(str(part["index"]))


# ---------------------------------------------------------------- the corpus

def corpus_tokenizer(rows: list, out: Path, vocab_size: int, trim: bool = False):
    """A sentencepiece trained on the words of the train-split rows (as the text stream spells
    them: words joined by single spaces), or with `trim` Gemma 3's cut to the pieces of those
    words; or the one a previous run left in `out`."""
    from .tokenizer import load_gemma_tokenizer, load_tokenizer, train_tokenizer, trim_tokenizer

    if (out / "tokenizer.model").is_file() and (out / "tokens.json").is_file():
        return load_tokenizer(out / "tokenizer.model")  # a resume; the header check compares it
    texts = [" ".join(w["w"] for w in r["words"]) for r in rows
             if r.get("split", "train") == "train" and r.get("words")]
    if not texts:
        raise VoxlmError("no train-split rows with word timings to train a tokenizer on",
                         "pass --tokenizer (e.g. another tokens folder's tokenizer.model), or a "
                         "corpus with them (voxlm synth, voxlm data import without --no-align)")
    if trim:
        return trim_tokenizer(load_gemma_tokenizer(), sorted({w for t in texts for w in t.split()}))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as folder:
        return train_tokenizer(texts, vocab_size, Path(folder) / "corpus.model")


def tokenize_corpus(corpus, out, codec=None, tokenizer=None, workers: int = 2,
                    progress: bool = True, threads: int = 1, text_vocab: int = 0,
                    trim: bool = False) -> TokenizeResult:
    """Encode every item of `corpus` (a folder with manifest.jsonl) into token shards in `out`.

    codec: model file or run folder (None: the shipped codec). tokenizer: a sentencepiece
    .model path, or None for Gemma 3's (the warm-start model's). text_vocab > 0: instead, train
    a sentencepiece of that size on the words of the corpus's train split (kept in `out`, reused
    on resume). trim: Gemma 3's tokenizer cut to the pieces the train split's words use
    (`tokenizer.trim_tokenizer`; a warm start maps its ids back). workers: processes; 0 or 1
    runs in this process. Resumable: items already in parts/ are skipped."""
    from tqdm import tqdm

    from ..codec.model import load_codec
    from .tokenizer import load_gemma_tokenizer, load_tokenizer

    if sum(map(bool, (text_vocab, trim, tokenizer is not None))) > 1:
        raise VoxlmError("--tokenizer, --text-vocab and --trim each choose the text tokenizer",
                         "pass at most one of them")
    began = time.time()
    corpus, out = Path(corpus), Path(out)
    if not (corpus / "manifest.jsonl").is_file():
        raise VoxlmError(f"no manifest.jsonl in {corpus}",
                         "pass a corpus folder: voxlm synth corpus --out DIR (or synth dialogues)")
    if out.exists() and not out.is_dir():
        raise VoxlmError(f"{out} exists and is not a folder", "pass a new or tokens folder to --out")
    rows = read_manifest(corpus / "manifest.jsonl")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise VoxlmError(f"{corpus / 'manifest.jsonl'} repeats item ids", "give every row its own id")
    bad = [i for i in ids if not i or "/" in i or "\\" in i or i.startswith(".")]
    if bad:
        raise VoxlmError(f"item id {bad[0]!r} cannot name a file", "use ids without slashes or a leading dot")
    model = load_codec(codec)  # validates the file (or says that no codec ships)
    if text_vocab or trim:
        text = corpus_tokenizer(rows, out, text_vocab, trim)
    else:
        text = load_tokenizer(tokenizer) if tokenizer is not None else load_gemma_tokenizer()
    path = codec_file(codec)
    header = {"format_version": FORMAT_VERSION, "corpus": str(corpus.resolve()),
              "codec": {"path": str(path.resolve()), "sha256": sha256_bytes(path.read_bytes()),
                        "config": json.loads(json.dumps(asdict(model.config)))},
              "tokenizer": {"name": text.name, "vocab_size": text.vocab_size,
                            "sha256": sha256_bytes(text.model_proto)},
              "frame_rate": model.config.frame_rate, "n_q": model.config.n_q,
              "codebook_size": model.config.codebook_size}
    if model.codes_of:  # only when there are some: older headers stay equal
        header["codec"]["codes_of"] = list(model.codes_of)
    _check_header(out, header)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out / "parts")
    remove_stale_temps(out)
    write_json(out / "tokens.json", header)
    text.save(out / "tokenizer.model")
    todo = [r for r in rows if not part_path(out, r["id"]).is_file()]
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), unit="item", disable=not progress,
               desc="tokenize corpus")
    init = (str(path), text.model_proto, text.name, threads)
    jobs = [(row, str(corpus), str(out)) for row in todo]
    if todo and workers <= 1:
        saved = dict(_WORKER)
        _WORKER.update(codec=model, tokenizer=text)
        try:
            for job in jobs:
                _work(job)
                bar.update(1)
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
    elif todo:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(todo)), initializer=_init_worker,
                                          initargs=init) as pool:
            for _ in pool.imap_unordered(_work, jobs, chunksize=1):
                bar.update(1)
    bar.close()
    frames = pack(out, ids)
    return TokenizeResult(out, len(rows), len(todo), frames, time.time() - began)


def _check_header(out: Path, header: dict):
    path = out / "tokens.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        return  # never written whole by write_json; rewrite it
    for key in ("codec", "tokenizer"):
        if old.get(key, {}).get("sha256") != header[key]["sha256"]:
            raise VoxlmError(f"{out} holds tokens made with another {key}",
                             f"pass the same --{key} as before to resume, or a new --out folder")


def pack(out: Path, ids: list) -> int:
    """Join the part files of `ids`, in that order, into codes.npy and index.jsonl; -> frames."""
    rows = []
    for item_id in ids:
        with np.load(part_path(out, item_id), allow_pickle=False) as part:  # the index only
            rows.append(json.loads(str(part["index"])))
    total = sum(r["frames"] * r["channels"] for r in rows)
    width = json.loads((out / "tokens.json").read_text())["n_q"]
    handle, temp = tempfile.mkstemp(dir=out, prefix=".codes.npy.", suffix=".tmp")
    os.close(handle)
    try:
        array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.int16, shape=(total, width))
        offset = 0
        for item_id, index in zip(ids, rows):
            codes, _ = read_part(part_path(out, item_id))  # [C, T, K]
            size = codes.shape[0] * codes.shape[1]
            array[offset: offset + size] = codes.reshape(size, width)
            index["offset"] = offset
            offset += size
        array.flush()
        del array
        os.chmod(temp, file_mode())
        os.replace(temp, out / "codes.npy")
    finally:
        Path(temp).unlink(missing_ok=True)
    order = ("id", "split", "duration", "offset", "frames", "channels", "text", "words")
    write_atomic(out / "index.jsonl", "".join(
        json.dumps({k: r[k] for k in order}, ensure_ascii=False) + "\n" for r in rows))
    return total
