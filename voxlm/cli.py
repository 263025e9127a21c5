"""`voxlm` command line: each subcommand parses flags and calls one library function.

Errors in the input print one line, `voxlm: error: <problem>; <fix>`, and exit 2; `--debug`
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = {
    "synth corpus": "voxlm synth corpus --out data/corpus --minutes 30 --voices 16",
    "synth dialogues": "voxlm synth dialogues --out data/dialogues --count 200",
    "synth stats": "voxlm synth stats data/dialogues",
    "synth realset": "voxlm synth realset --out data/realset",
    "synth voices": "voxlm synth voices",
    "synth say": "voxlm synth say \"Hello there.\" -o hello.wav --voice flite:slt",
    "audio info": "voxlm audio info speech.mp3",
    "audio convert": "voxlm audio convert speech.mp3 speech.wav --normalize",
    "demo": "voxlm demo --out voxlm-demo",
}


def _csv(value: str) -> tuple:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def cmd_synth_corpus(args):
    from .synth.corpus import CorpusConfig, synthesize_corpus

    config = CorpusConfig(minutes=args.minutes, engines=args.engines, voices=args.voices,
                          sources=args.sources, text_files=tuple(args.text or ()),
                          augment=args.augment, seed=args.seed, workers=args.workers)
    manifest = synthesize_corpus(args.out, config, progress=not args.quiet)
    print(f"corpus: {manifest}")


def cmd_synth_dialogues(args):
    from .synth.dialogue import DialogueConfig, synthesize_dialogues

    config = DialogueConfig(seed=args.seed, assistant_voice=args.assistant_voice)
    manifest = synthesize_dialogues(args.out, args.count, config, workers=args.workers,
                                    progress=not args.quiet)
    print(f"dialogues: {manifest}")


def cmd_synth_stats(args):
    from .turntaking import stats_for_folder

    print(stats_for_folder(args.dir))


def cmd_synth_realset(args):
    from .synth.realset import build_realset

    print(f"realset: {build_realset(args.out, limit=args.limit)}")


def cmd_synth_voices(args):
    from .synth.engines import HELD_OUT_ENGINES, TRAINING_ENGINES, get_engine

    for name in TRAINING_ENGINES + HELD_OUT_ENGINES:
        note = " (held out: evaluation only)" if name in HELD_OUT_ENGINES else ""
        print(f"{name}{note}: " + " ".join(v.id for v in get_engine(name).voices()))


def cmd_synth_say(args):
    from .audio import save_audio
    from .data import write_json
    from .synth.engines import get_engine, parse_voice

    voice = parse_voice(args.voice)
    engine = get_engine(voice.engine)
    try:
        speech = engine.speak(args.text, voice, rate=args.rate)
    finally:
        engine.close()
    save_audio(args.output, speech.audio)
    words = [{"w": w.w, "start": w.start, "end": w.end} for w in speech.words]
    if args.words:
        write_json(args.words, words)
    print(f"{args.output}: {speech.duration:.2f} s, {len(words)} words, voice {voice.id}")


def cmd_audio_info(args):
    from .audio import SAMPLE_RATE, load_audio, rms_db

    audio = load_audio(args.input, max_seconds=args.max_seconds)
    print(f"{args.input}: {len(audio) / SAMPLE_RATE:.3f} s, level {rms_db(audio):.1f} dBFS, "
          f"peak {abs(audio).max():.3f}")


def cmd_audio_convert(args):
    from .audio import load_audio, normalize_loudness, save_audio

    audio = load_audio(args.input, max_seconds=args.max_seconds)
    if args.normalize:
        audio = normalize_loudness(audio)
    print(f"wrote {save_audio(args.output, audio)}")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out)


def build_parser() -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {v}" for v in EXAMPLES.values())
    parser = argparse.ArgumentParser(prog="voxlm", epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Speech codec, speech-text LM and full-duplex "
                                                 "dialogue, trained from nothing.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(parent, name, full, func, help):
        p = parent.add_parser(name, help=f"{help} (e.g. `{EXAMPLES[full]}`)",
                              description=help, epilog=f"example:\n  {EXAMPLES[full]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    synth = top.add_parser("synth", help="make speech and spoken dialogues with local TTS engines "
                                         f"(e.g. `{EXAMPLES['synth corpus']}`)")
    sub = synth.add_subparsers(dest="synth_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "corpus", "synth corpus", cmd_synth_corpus, "multi-voice monologue corpus")
    p.add_argument("--out", required=True, type=Path, help="corpus folder (resumes if it exists)")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of audio to make")
    p.add_argument("--voices", type=int, default=None, help="number of voices (default: all)")
    p.add_argument("--engines", type=_csv, default=("espeak", "flite", "piper", "kokoro"),
                   help="comma-separated engines (espeak,flite,piper,kokoro; festival is held out)")
    p.add_argument("--sources", type=_csv, default=("chitchat", "qa"), help="text sources")
    p.add_argument("--text", action="append", type=Path, help="extra text file (repeatable)")
    p.add_argument("--augment", type=float, default=0.3, help="share of items augmented")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "dialogues", "synth dialogues", cmd_synth_dialogues, "two-channel spoken dialogues")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--count", type=int, default=20, help="number of dialogues")
    p.add_argument("--assistant-voice", default="piper:joe", help="the assistant's one voice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "stats", "synth stats", cmd_synth_stats,
            "turn-taking statistics of a dialogue folder beside real-conversation figures")
    p.add_argument("dir", type=Path)

    p = add(sub, "realset", "synth realset", cmd_synth_realset, "real-speech eval set (Asterisk prompts)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts")

    add(sub, "voices", "synth voices", cmd_synth_voices, "list every voice")

    p = add(sub, "say", "synth say", cmd_synth_say, "speak one text to a wav file")
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--voice", default="espeak:en-us+m1", help="ENGINE:NAME (see `voxlm synth voices`)")
    p.add_argument("--rate", type=float, default=1.0, help="speaking-rate factor")
    p.add_argument("--words", type=Path, help="also write word timings to this JSON file")

    audio = top.add_parser("audio", help=f"inspect and convert audio files (e.g. `{EXAMPLES['audio info']}`)")
    sub = audio.add_subparsers(dest="audio_command", metavar="SUBCOMMAND", required=True)
    for name, func, help in (("info", cmd_audio_info, "duration and level of an audio file"),
                             ("convert", cmd_audio_convert, "any audio file to 16 kHz mono wav/flac")):
        p = add(sub, name, f"audio {name}", func, help)
        p.add_argument("input", type=Path)
        if name == "convert":
            p.add_argument("output", type=Path)
            p.add_argument("--normalize", action="store_true", help="loudness-normalise to -23 dBFS")
        p.add_argument("--max-seconds", type=float, default=3600.0, help="reject longer files")

    p = add(top, "demo", "demo", cmd_demo, "the main job: synthesize a short spoken dialogue")
    p.add_argument("--out", type=Path, default=Path("voxlm-demo"))
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    from .errors import VoxlmError

    try:
        args.func(args)
    except VoxlmError as exc:
        if args.debug:
            raise
        print(f"voxlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("voxlm: interrupted; finished work is kept, run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, and how to see more
        if args.debug:
            raise
        print(f"voxlm: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
