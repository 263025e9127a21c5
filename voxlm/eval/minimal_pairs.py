"""Spoken minimal pairs for zero-shot LM evaluation, and their speech from held-out voices.

Three pair sets, in the spirit of the ZeroSpeech 2021 / TWIST benchmarks (not the same tests):

    swuggy       a frequent real word against a non-word made by changing one of its phonemes
                 (lexicon: the CMUdict shipped with pocketsphinx; frequencies: chitchat-dataset)
    sblimp       a templated grammatical sentence against its ungrammatical twin (agreement,
                 determiner-noun number, word order, anaphors, tense after "did", case, "do")
    tstorycloze  a three-sentence story with its own ending against another story's ending

Each member is a `Say`: text, or ARPAbet phones for words. `synthesize` speaks them with the
held-out festival voices (DESIGN.md 3), both members of a pair with the same voice and the same
path: words from phones through festival's lexicon (an entry added per item, so a non-word gets
the prosody of any word), sentences as text. pocketsphinx's CMUdict has no stress marks: primary
stress goes on the first vowel other than AH, at the same position in the word and its
non-word. Without festival it falls back to eSpeak NG voices that no corpus uses ([[...]]
phoneme input for words). Audio is cached by content under the cache folder, so reruns do not
synthesize again.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import VoxlmError

TASKS = ("swuggy", "sblimp", "tstorycloze")
VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
CONSONANTS = frozenset("B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split())
PHONES = VOWELS | CONSONANTS
FESTIVAL_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")  # engines.FESTIVAL_VOICES
FALLBACK_VOICES = ("en-us+Alex", "en-gb+Annie")  # eSpeak NG variants no corpus uses
BATCH = 100  # utterances per festival process (a batch's wavs are cached before the next)
POCKETSPHINX_FIX = "install it with `pip install pocketsphinx` (it ships the CMU dictionary)"
# ARPAbet -> eSpeak NG English phoneme mnemonics, for [[...]] input (fallback engine only)
ESPEAK_PHONES = {"AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "B": "b",
                 "CH": "tS", "D": "d", "DH": "D", "EH": "E", "ER": "3:", "EY": "eI", "F": "f",
                 "G": "g", "HH": "h", "IH": "I", "IY": "i:", "JH": "dZ", "K": "k", "L": "l",
                 "M": "m", "N": "n", "NG": "N", "OW": "oU", "OY": "OI", "P": "p", "R": "r",
                 "S": "s", "SH": "S", "T": "t", "TH": "T", "UH": "U", "UW": "u:", "V": "v",
                 "W": "w", "Y": "j", "Z": "z", "ZH": "Z"}


class Say(NamedTuple):
    text: str  # what is said (for a non-word: its phones, for reading)
    phones: tuple = ()  # ARPAbet phones: speak these rather than the text
    stress: tuple = ()  # per phone: 1 primary-stressed vowel, 0 other vowel, -1 consonant

    @property
    def key(self) -> str:  # content hash: the cache file name
        raw = f"{self.text}|{' '.join(self.phones)}|{self.stress}"
        return hashlib.sha1(raw.encode()).hexdigest()[:16]


class Pair(NamedTuple):
    task: str  # one of TASKS
    kind: str  # phenomenon or story id
    good: Say
    bad: Say
    context: Say | None = None  # tstorycloze: the story both endings follow


# ---------------------------------------------------------------- lexicon and sWUGGY

def cmudict_path() -> Path:
    """The CMU pronouncing dictionary inside the installed pocketsphinx package."""
    import importlib.util

    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        raise VoxlmError("pocketsphinx is not installed, and sWUGGY needs its CMU dictionary",
                         POCKETSPHINX_FIX)
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("cmudict*.dict"))
        if found:
            return found[0]
    raise VoxlmError("the installed pocketsphinx has no cmudict*.dict file",
                     "reinstall it with `pip install --force-reinstall pocketsphinx`")


def load_lexicon(path=None) -> dict:
    """{word: [phones tuple, ...]} from a CMUdict file ('word(2) P H ...' lines: alternates)."""
    path = Path(path) if path is not None else cmudict_path()
    lexicon: dict = {}
    digits = str.maketrans("", "", "0123456789")
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        word, _, pron = line.partition(" ")
        phones = tuple(pron.translate(digits).upper().split())
        if phones and PHONES.issuperset(phones):
            lexicon.setdefault(word.split("(")[0].lower(), []).append(phones)
    if not lexicon:
        raise VoxlmError(f"{path}: no pronunciations read", "pass a CMUdict-format file")
    return lexicon


def word_counts() -> Counter:
    """Word frequencies in the chitchat conversations (the corpus's main text source)."""
    try:
        import chitchat_dataset
    except ImportError:
        raise VoxlmError("chitchat-dataset is not installed (sWUGGY takes word frequencies "
                         "from it)", "run `pip install -e '.[synth]'`") from None
    data = json.loads(Path(chitchat_dataset.__file__).with_name("dataset.json").read_text())
    words = re.compile(r"[a-z]+(?:'[a-z]+)?")
    return Counter(w for conversation in data.values() for message in conversation["messages"]
                   for w in words.findall(" ".join(u["text"] for u in message).lower()))


def stress_of(phones) -> tuple:
    """Primary stress on the first vowel that is not AH (else the first vowel): 1 / 0 / -1."""
    vowels = [i for i, p in enumerate(phones) if p in VOWELS]
    main = next((i for i in vowels if phones[i] != "AH"), vowels[0] if vowels else -1)
    return tuple(-1 if p not in VOWELS else int(i == main) for i, p in enumerate(phones))


def _trigrams(phones) -> list:
    padded = ("#", *phones, "#")
    return [padded[i:i + 3] for i in range(len(padded) - 2)]


def nonword_pairs(lexicon: dict, counts: Counter, n: int, seed: int = 0, min_phones: int = 3,
                  max_phones: int = 8, min_trigram: int = 5) -> list:
    """Up to n sWUGGY-like pairs: the most frequent dictionary words (alphabetic, min..max
    phones) each against one non-word: one phoneme replaced by another of its class (vowel for
    vowel, consonant for consonant) so that the result is no pronunciation in the dictionary and
    every phone trigram of it (word edges included) occurs in at least `min_trigram` of its
    pronunciations: phonotactically plausible, as sWUGGY's non-words are."""
    known = {p for prons in lexicon.values() for p in prons}
    attested = Counter(t for p in known for t in _trigrams(p))
    rng = random.Random(seed)
    words = sorted((w for w in counts if w.isalpha() and w in lexicon),
                   key=lambda w: (-counts[w], w))
    pairs, used = [], set()
    for word in words:
        if len(pairs) >= n:
            break
        phones = lexicon[word][0]
        if not min_phones <= len(phones) <= max_phones or phones in used:
            continue
        options = []
        for i, p in enumerate(phones):
            for q in sorted((VOWELS if p in VOWELS else CONSONANTS) - {p}):
                new = phones[:i] + (q,) + phones[i + 1:]
                plausible = all(attested[t] >= min_trigram for t in _trigrams(new))
                if plausible and new not in known and new not in used:
                    options.append(new)
        if not options:
            continue
        fake = rng.choice(options)
        used.update((phones, fake))
        stress = stress_of(phones)
        pairs.append(Pair("swuggy", "word", Say(word, phones, stress),
                          Say(" ".join(fake).lower(), fake, stress)))
    return pairs


# ---------------------------------------------------------------- sBLIMP

NOUNS = [("dog", "dogs"), ("cat", "cats"), ("boy", "boys"), ("girl", "girls"),
         ("teacher", "teachers"), ("bird", "birds"), ("doctor", "doctors"), ("friend", "friends"),
         ("child", "children"), ("man", "men"), ("woman", "women"), ("student", "students")]
VERBS = [("runs", "run"), ("sleeps", "sleep"), ("walks", "walk"), ("eats", "eat"),
         ("sings", "sing"), ("works", "work"), ("plays", "play"), ("laughs", "laugh")]
ADVERBS = ["every day", "in the morning", "at home", "a lot", "after school", "in the park"]
ADJECTIVES = ["happy", "tired", "big", "small", "hungry", "quiet", "old", "young"]
NAMES = [("Tom", "he"), ("Anna", "she"), ("Mike", "he"), ("Sarah", "she"), ("David", "he"),
         ("Emma", "she"), ("Jack", "he"), ("Lucy", "she")]
IRREGULAR = [("see", "saw", "the movie"), ("eat", "ate", "the cake"), ("take", "took", "the bus"),
             ("buy", "bought", "a new car"), ("find", "found", "the keys"),
             ("write", "wrote", "a letter"), ("drink", "drank", "the milk"),
             ("break", "broke", "the window"), ("give", "gave", "the answer"),
             ("make", "made", "the bed")]
WHEN = ["yesterday", "last week", "this morning", "on Sunday"]
SELF_VERBS = ["saw", "hurt", "blamed", "asked", "taught"]
OBJECTS = ["the music", "the new teacher", "this song", "the small dog", "cold weather"]
REFLEXIVE = {"he": "himself", "she": "herself"}
PHENOMENA = ("subject_verb", "be_agreement", "determiner_noun", "adjective_order", "anaphor",
             "did_tense", "pronoun_case", "do_support")


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


def blimp_pair(phenomenon: str, rng: random.Random) -> tuple:
    """(grammatical, ungrammatical) sentences of one phenomenon, slots drawn from rng."""
    sg, pl = rng.choice(NOUNS)
    v3, vb = rng.choice(VERBS)
    adv, adj = rng.choice(ADVERBS), rng.choice(ADJECTIVES)
    name, pron = rng.choice(NAMES)
    plural = rng.random() < 0.5
    if phenomenon == "subject_verb":
        good, bad = (f"the {pl} {vb} {adv}.", f"the {pl} {v3} {adv}.") if plural else \
            (f"the {sg} {v3} {adv}.", f"the {sg} {vb} {adv}.")
    elif phenomenon == "be_agreement":
        good, bad = (f"the {pl} are {adj}.", f"the {pl} is {adj}.") if plural else \
            (f"the {sg} is {adj}.", f"the {sg} are {adj}.")
    elif phenomenon == "determiner_noun":
        good, bad = (f"I saw these {pl} {adv}.", f"I saw these {sg} {adv}.") if plural else \
            (f"I saw this {sg} {adv}.", f"I saw this {pl} {adv}.")
    elif phenomenon == "adjective_order":
        good, bad = f"the {adj} {sg} {v3} {adv}.", f"the {sg} {adj} {v3} {adv}."
    elif phenomenon == "anaphor":
        other = "she" if pron == "he" else "he"
        verb = rng.choice(SELF_VERBS)
        good = f"{name} {verb} {REFLEXIVE[pron]} {adv}."
        bad = f"{name} {verb} {REFLEXIVE[other]} {adv}."
    elif phenomenon == "did_tense":
        base, past, obj = rng.choice(IRREGULAR)
        when = rng.choice(WHEN)
        good, bad = f"{name} did not {base} {obj} {when}.", f"{name} did not {past} {obj} {when}."
    elif phenomenon == "pronoun_case":
        subj, wrong = ("they", "them") if plural else (pron, "him" if pron == "he" else "her")
        verb = "like" if plural else "likes"
        obj = rng.choice(OBJECTS)
        good, bad = f"{subj} {verb} {obj} {adv}.", f"{wrong} {verb} {obj} {adv}."
    elif phenomenon == "do_support":
        obj = rng.choice(OBJECTS)
        good, bad = (f"does {name} like {obj}?", f"do {name} like {obj}?") if not plural else \
            (f"do the {pl} like {obj}?", f"does the {pl} like {obj}?")
    else:
        raise ValueError(f"unknown phenomenon {phenomenon!r}; choose from {PHENOMENA}")
    return _sentence(good), _sentence(bad)


def blimp_pairs(n: int, seed: int = 0) -> list:
    """Up to n sBLIMP-like pairs: the phenomena in turn (one whose sentences run out drops
    out), no sentence pair twice."""
    rng, pairs, seen = random.Random(seed), [], set()
    misses = dict.fromkeys(PHENOMENA, 0)  # draws in a row that gave a sentence already made
    turn = 0
    while len(pairs) < n and min(misses.values()) < 200:
        phenomenon = PHENOMENA[turn % len(PHENOMENA)]
        turn += 1
        if misses[phenomenon] >= 200:
            continue
        good, bad = blimp_pair(phenomenon, rng)
        if good in seen:
            misses[phenomenon] += 1
            turn -= 1  # try this phenomenon again
            continue
        misses[phenomenon] = 0
        seen.add(good)
        pairs.append(Pair("sblimp", phenomenon, Say(good), Say(bad)))
    return pairs


# ---------------------------------------------------------------- tStoryCloze

# (three context sentences, ending); {N} name, {P}/{p} pronoun, {S} possessive, {O} object
STORIES = [
    ("{N} was very hungry. {P} opened the fridge. It was full of food.", "{P} made a big sandwich."),
    ("{N} wanted to learn to swim. {P} went to the pool every day. The teacher was patient.",
     "Soon {p} could swim across the pool."),
    ("It started to rain. {N} did not have an umbrella. {P} ran to the nearest shop.",
     "{P} waited inside until the rain stopped."),
    ("{N} had a test on Monday. {P} studied all weekend. {P} went to bed early.",
     "{P} passed the test easily."),
    ("{N} dropped {S} phone. The screen was broken. {P} took it to a repair shop.",
     "The man fixed it in one hour."),
    ("{N} planted some seeds in the garden. {P} watered them every morning. The sun was warm.",
     "After a few weeks the flowers came up."),
    ("{N} lost {S} keys. {P} looked everywhere in the house. Then {p} checked {S} coat.",
     "The keys were in the pocket."),
    ("{N} got a puppy for {S} birthday. The puppy was small and brown. It liked to play.",
     "{N} named the puppy Max."),
    ("{N} was late for work. {P} missed the bus. {P} called a taxi.",
     "{P} got to the office just in time."),
    ("{N} wanted to bake a cake. {P} bought eggs, flour and sugar. {P} turned on the oven.",
     "The cake smelled wonderful."),
    ("{N} went to the beach. The water was too cold. {P} sat in the sun instead.",
     "{P} read a book until the evening."),
    ("{N}'s car would not start. {P} opened the hood. The battery was dead.",
     "A neighbour helped {O} charge it."),
    ("{N} heard a noise at night. {P} turned on the light. It was only the cat.",
     "{P} laughed and went back to sleep."),
    ("{N} wanted a new bike. {P} saved money for months. Finally {p} had enough.",
     "{P} bought a red bike at the store."),
    ("{N} felt cold. {P} closed the window. Then {p} made a cup of tea.",
     "Soon {p} felt warm again."),
    ("{N} moved to a new city. {P} did not know anyone. {P} joined a running club.",
     "{P} made many new friends there."),
    ("{N}'s friend had a birthday. {N} bought a present. {P} wrapped it in blue paper.",
     "{S_} friend loved the gift."),
    ("{N} went fishing at the lake. {P} waited for hours. Then something pulled the line.",
     "{P} caught a big fish."),
    ("{N} had a bad headache. {P} drank some water. {P} lay down in a dark room.",
     "After an hour {p} felt better."),
    ("{N} wanted to paint {S} room. {P} chose a light green colour. {P} moved the furniture.",
     "The room looked fresh and new."),
    ("{N} forgot {S} lunch at home. At noon {p} was very hungry. A friend shared some soup.",
     "{N} thanked {S} friend many times."),
    ("{N} saw a sad little kitten. It was alone in the street. {P} gave it some milk.",
     "Then {p} took the kitten home."),
    ("{N} wanted to climb the hill. {P} packed water and a map. The path was steep.",
     "At the top the view was beautiful."),
    ("{N}'s team had a big game. They practised every evening. The other team was strong.",
     "In the end {S} team won by one point."),
]
PRONOUNS = {"he": {"P": "He", "p": "he", "S": "his", "S_": "His", "O": "him"},
            "she": {"P": "She", "p": "she", "S": "her", "S_": "Her", "O": "her"}}


def _fill(template: str, name: str, pron: str) -> str:
    return template.format(N=name, **PRONOUNS[pron])


def story_pairs(n: int, seed: int = 0) -> list:
    """Up to n tStoryCloze-like pairs: a story with its ending against the ending of another
    story (the one closest in word count, so length says little), the same name in both."""
    rng = random.Random(seed)
    combos = [(s, k) for s in range(len(STORIES)) for k in range(len(NAMES))]
    rng.shuffle(combos)
    pairs = []
    for story, k in combos[:n]:
        name, pron = NAMES[k]
        context, ending = STORIES[story]
        length = len(ending.split())
        others = sorted((abs(len(STORIES[j][1].split()) - length), rng.random(), j)
                        for j in range(len(STORIES)) if j != story)
        wrong = STORIES[others[0][2]][1]
        pairs.append(Pair("tstorycloze", f"story{story}", Say(_fill(ending, name, pron)),
                          Say(_fill(wrong, name, pron)), Say(_fill(context, name, pron))))
    return pairs


def build_pairs(tasks=TASKS, n: int = 200, seed: int = 0, lexicon=None, counts=None,
                cache=None) -> list:
    """Pairs of every task in `tasks`, at most n each. lexicon / counts: for sWUGGY (default:
    pocketsphinx's CMUdict and chitchat frequencies); its pairs are kept in the folder `cache`
    (when given) as swuggy-N-SEED.json, since finding them reads both."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise VoxlmError(f"unknown zero-shot task {unknown[0]!r}", f"choose from {', '.join(TASKS)}")
    pairs = []
    if "swuggy" in tasks:
        stored = Path(cache) / f"swuggy-{n}-{seed}.json" if cache is not None else None
        if stored is not None and stored.is_file() and lexicon is None and counts is None:
            pairs += [Pair("swuggy", "word", Say(g[0], tuple(g[1]), tuple(g[2])),
                           Say(b[0], tuple(b[1]), tuple(b[2])))
                      for g, b in json.loads(stored.read_text())]
        else:
            found = nonword_pairs(lexicon if lexicon is not None else load_lexicon(),
                                  counts if counts is not None else word_counts(), n, seed)
            if stored is not None and lexicon is None and counts is None:
                from ..data import write_json

                write_json(stored, [[p.good, p.bad] for p in found])
            pairs += found
    if "sblimp" in tasks:
        pairs += blimp_pairs(n, seed)
    if "tstorycloze" in tasks:
        pairs += story_pairs(n, seed)
    return pairs


# ---------------------------------------------------------------- speech

class Synthesizer(NamedTuple):
    engine: str  # "festival" or "espeak"
    voices: tuple  # voice names of that engine
    note: str  # what the report says about the voices


def held_out_synthesizer() -> Synthesizer:
    """Festival's held-out voices when festival runs here; else eSpeak NG variants that no
    corpus uses, with a note saying so."""
    missing = [v for v in FESTIVAL_VOICES if not _festival_has(v)]
    if not missing:
        return Synthesizer("festival", FESTIVAL_VOICES, "festival voices "
                           f"{', '.join(FESTIVAL_VOICES)}: held out, never used in training")
    if shutil.which("espeak-ng") is None:
        raise VoxlmError("neither festival nor espeak-ng can speak the pairs here",
                         "install them with `sudo scripts/install-system.sh`")
    return Synthesizer("espeak", FALLBACK_VOICES, f"FALLBACK: festival (voice "
                       f"{missing[0]}) is missing here, so the pairs are spoken by eSpeak NG "
                       f"variants {', '.join(FALLBACK_VOICES)}, which no corpus uses but whose "
                       "engine the model has heard; install festival for held-out voices")


def _festival_has(voice: str) -> bool:
    if shutil.which("festival") is None:
        return False
    proc = subprocess.run(["festival", "--batch", f"(voice_{voice})", '(print "voxlm-ok")'],
                          capture_output=True, text=True, timeout=60)
    return "voxlm-ok" in proc.stdout and "not defined" not in proc.stderr + proc.stdout


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_batch(jobs: list, voice: str, folder: Path):
    """Speak [(Say, wav path)] with one festival process. A word with phones gets a lexicon
    entry under a made-up spelling, so it goes through the same prosody as any word."""
    lines = [f"(voice_{voice})"]
    for i, (say, path) in enumerate(jobs):
        text = say.text
        if say.phones:
            text = "vox" + "".join(chr(97 + int(d)) for d in str(i))  # letters only: one word
            phones = " ".join(p.lower() + ("" if s < 0 else str(s))
                              for p, s in zip(say.phones, say.stress or stress_of(say.phones)))
            lines.append(f"(lex.add.entry (list \"{text}\" nil (lex.syllabify.phstress '({phones}))))")
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                     f"{_scheme_string(str(path))} 'riff)")
    script = folder / "speak.scm"
    script.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(["festival", "--batch", str(script)], capture_output=True, text=True,
                          timeout=60 + 10 * len(jobs))
    missing = [say for say, path in jobs if not path.exists()]
    if missing:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise VoxlmError(f"festival voice {voice} did not speak {missing[0].text!r} "
                         f"({err[-1] if err else 'no message'})",
                         "check that `festival --batch '(voice_" + voice + ")'` runs")


def _espeak_one(say: Say, voice: str, path: Path):
    if say.phones:
        marks = say.stress or stress_of(say.phones)
        unstressed = {"AH": "@", "ER": "3"}  # schwa and r-coloured schwa off the stress
        text = "[[" + "".join(("'" if s == 1 else "") + (unstressed.get(p, ESPEAK_PHONES[p])
                                                         if s == 0 else ESPEAK_PHONES[p])
                              for p, s in zip(say.phones, marks)) + "]]"
    else:
        text = say.text
    proc = subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0 or not path.exists():
        raise VoxlmError(f"espeak-ng voice {voice} did not speak {say.text!r} "
                         f"({proc.stderr.strip()[-80:]})", "check `espeak-ng --voices=variant`")


def audio_path(cache: Path, synth: Synthesizer, voice: str, say: Say) -> Path:
    return Path(cache) / "audio" / f"{synth.engine}-{voice}" / f"{say.key}.wav"


def synthesize(items: list, synth: Synthesizer, cache, progress: bool = False) -> dict:
    """Speak every (Say, voice) of `items` that has no cached wav yet; -> {(key, voice): path}.
    Audio: 16 kHz mono, silence trimmed to 100 ms at both ends (engines.trim)."""
    from tqdm import tqdm

    from ..audio import load_audio, save_audio
    from ..synth.engines import trim

    out, todo = {}, {}
    for say, voice in items:
        path = audio_path(cache, synth, voice, say)
        out[(say.key, voice)] = path
        if not path.exists():
            todo.setdefault(voice, {})[say.key] = (say, path)
    bar = tqdm(total=sum(map(len, todo.values())), desc=f"speak pairs ({synth.engine})",
               unit="utt", disable=not progress or not todo)
    for voice, jobs in todo.items():
        jobs = list(jobs.values())
        for start in range(0, len(jobs), BATCH):  # one festival process per batch
            chunk = jobs[start:start + BATCH]
            with tempfile.TemporaryDirectory(prefix="voxlm-pairs-") as tmp:
                raw = [(say, Path(tmp) / f"{k}.wav") for k, (say, _) in enumerate(chunk)]
                if synth.engine == "festival":
                    _festival_batch(raw, voice, Path(tmp))
                else:
                    for say, path in raw:
                        _espeak_one(say, voice, path)
                for (_, temp), (_, final) in zip(raw, chunk):
                    audio, _ = trim(load_audio(temp), [])
                    save_audio(final, audio.astype(np.float32))
            bar.update(len(chunk))
    bar.close()
    return out
