"""Text to speak: real conversations (chitchat-dataset), templated spoken QA, user text files.

Everything here returns plain spoken-form English: numbers written as words, no markup, so the
transcript in a manifest is exactly what the audio says.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
MAX_WORDS = 40  # longest utterance we speak in one go (keeps files a few seconds long)


def number_words(n: int) -> str:
    """0..999_999 in words: 42 -> 'forty two', -3 -> 'minus three'."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    raise ValueError(f"number {n} is out of range for number_words")


def spoken(text: str) -> str:
    """Normalise written text to what a speaker says: digits to words, symbols spelled out,
    markup and emoticons dropped, whitespace collapsed."""
    text = re.sub(r"https?://\S+|\S+@\S+", " ", text)
    text = text.replace("&", " and ").replace("%", " percent").replace("+", " plus ")
    text = re.sub(r"\$(\d+)", r"\1 dollars", text)
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    text = re.sub(r"(\d)\.(\d)", r"\1 point \2", text)
    text = re.sub(r"\d+", lambda m: number_words(int(m.group())) if len(m.group()) <= 6 else
                  " ".join(ONES[int(c)] for c in m.group()), text)
    text = re.sub(r"[:;=][-']?[()DPp/\\|]+|<3", " ", text)  # emoticons
    text = re.sub(r"[^A-Za-z' ,.!?\-]", " ", text)
    text = re.sub(r"([,.!?])\1+", r"\1", text)
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    return " ".join(text.split()).strip(" ,")


def cap_words(text: str, max_words: int = MAX_WORDS) -> str:
    """Keep whole sentences up to max_words words; a first sentence longer than that is cut."""
    kept, count = [], 0
    for sentence in re.findall(r"[^.!?]+[.!?]*", text):
        n = len(sentence.split())
        if kept and count + n > max_words:
            break
        kept.append(sentence.strip())
        count += n
    out = " ".join(kept)
    words = out.split()
    return out if len(words) <= max_words else " ".join(words[:max_words]) + "."


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?" else text + "."


def chitchat_conversations(limit: int | None = None) -> list:
    """Real human conversations from chitchat-dataset: [[turn text, ...], ...], speakers
    alternating, each turn normalised to spoken form and capped at MAX_WORDS words."""
    import json

    try:
        import chitchat_dataset
    except ImportError:
        from ..errors import VoxlmError

        raise VoxlmError("chitchat-dataset is not installed; run `pip install -e '.[synth]'`") from None
    path = Path(chitchat_dataset.__file__).with_name("dataset.json")
    data = json.loads(path.read_text())
    conversations = []
    for key in sorted(data):
        turns = []
        for messages in data[key]["messages"]:
            text = spoken(" ".join(_sentence(m["text"]) for m in messages))
            if re.search(r"[A-Za-z]", text):
                turns.append(cap_words(text))
        if len(turns) >= 2:
            conversations.append(turns)
        if limit and len(conversations) >= limit:
            break
    return conversations


def chitchat_utterances(limit: int | None = None) -> list:
    """Every turn of every chitchat conversation, in order."""
    return [t for conv in chitchat_conversations(limit) for t in conv]


FACTS = [
    ("What colour is the sky on a clear day?", "The sky is blue."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What do bees make?", "Bees make honey."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Which animal says moo?", "A cow says moo."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many hours are in a day?", "There are twenty four hours in a day."),
    ("What planet do we live on?", "We live on the Earth."),
    ("What colour is grass?", "Grass is green."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What comes after Monday?", "Tuesday comes after Monday."),
    ("What is the largest ocean?", "The largest ocean is the Pacific."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
]
SPELL_WORDS = "cat dog house green water apple river music table window".split()
COUNT_FROM, COUNT_STEPS = range(16), range(3, 7)  # counting questions: first number, numbers after
_OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def arithmetic_pair(rng: random.Random, max_operand: int = 20):
    """('What is seven plus five?', 'Seven plus five is twelve.'), operands 0..max_operand."""
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
    op = rng.choice(sorted(_OPS))
    if op == "minus" and b > a:
        a, b = b, a
    phrase = f"{number_words(a)} {op} {number_words(b)}"
    question = rng.choice([f"What is {phrase}?", f"How much is {phrase}?", f"Can you tell me {phrase}?"])
    return question, _sum_answer(a, op, b)


def _sum_answer(a: int, op: str, b: int) -> str:
    phrase = f"{number_words(a)} {op} {number_words(b)}".capitalize()
    return f"{phrase} is {number_words(_OPS[op](a, b))}."


def _count_answer(start: int, stop: int) -> str:
    return ", ".join(number_words(k) for k in range(start, stop + 1)).capitalize() + "."


def _spelling_answer(word: str) -> str:
    return f"{word.capitalize()} is spelled " + ", ".join(c.upper() for c in word) + "."


QA_KINDS = ("arithmetic", "counting", "spelling", "fact")


def qa_pair(rng: random.Random, max_operand: int = 20, weights: tuple = (4, 1, 1, 2)):
    """One spoken question and its answer: arithmetic, counting, spelling or a simple fact, drawn
    with the relative odds `weights` (in QA_KINDS order)."""
    kind = rng.choices(QA_KINDS, weights=list(weights))[0]
    if kind == "arithmetic":
        return arithmetic_pair(rng, max_operand)
    if kind == "counting":
        start = rng.randint(0, COUNT_FROM[-1])
        stop = start + rng.randint(COUNT_STEPS[0], COUNT_STEPS[-1])
        return (f"Can you count from {number_words(start)} to {number_words(stop)}?",
                _count_answer(start, stop))
    if kind == "spelling":
        word = rng.choice(SPELL_WORDS)
        return f"How do you spell {word}?", _spelling_answer(word)
    return rng.choice(FACTS)


def every_answer(max_operand: int = 20) -> list:
    """Every answer `qa_pair` can give, once: each sum of operands 0..max_operand (plus, minus
    without negative results, times), each count, each spelling and each fact."""
    counts = [_count_answer(start, start + steps) for start in COUNT_FROM for steps in COUNT_STEPS]
    return (every_sum(max_operand) + counts + [_spelling_answer(w) for w in SPELL_WORDS]
            + [a for _, a in FACTS])


def every_sum(max_operand: int = 20) -> list:
    """Every arithmetic answer, once: "Seven plus five is twelve.", operands 0..max_operand
    (plus, minus without negative results, times)."""
    numbers = range(max_operand + 1)
    return [_sum_answer(a, op, b) for op in sorted(_OPS) for a in numbers for b in numbers
            if op != "minus" or b <= a]


def text_file_lines(path) -> list:
    """Non-empty lines of a user text file, normalised to spoken form."""
    from ..errors import VoxlmError

    path = Path(path)
    if not path.is_file():
        raise VoxlmError(f"{path}: no such text file; pass a UTF-8 file with one utterance per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise VoxlmError(f"{path}: not UTF-8 text; convert it with `iconv -t utf-8`") from None
    out = [spoken(line) for line in lines]
    out = [t for t in out if re.search(r"[A-Za-z]", t)]
    if not out:
        raise VoxlmError(f"{path}: no speakable lines; pass a file with English sentences")
    return out
