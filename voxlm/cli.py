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
    "codec train": "voxlm codec train --data data/corpus --out runs/codec --config base --steps 20000",
    "codec encode": "voxlm codec encode speech.wav codes.npy --bitrate 1.0",
    "codec decode": "voxlm codec decode codes.npy speech.wav",
    "codec roundtrip": "voxlm codec roundtrip speech.wav out.wav --streaming --bitrate 1.5",
    "codec teacher": "voxlm codec teacher --data data/corpus",
    "codec export": "voxlm codec export runs/codec voxlm/assets/codec.safetensors --int8",
    "lm tokenize": "voxlm lm tokenize --data data/corpus --out data/tokens --workers 2",
    "lm train": "voxlm lm train --data data/tokens --out runs/lm --mode aligned --config base --steps 20000",
    "tts": "voxlm tts \"Hello there, how are you?\" -o hello.wav --checkpoint runs/lm",
    "asr": "voxlm asr speech.wav --checkpoint runs/lm",
    "continue": "voxlm continue prompt.wav -o more.wav --seconds 5 --checkpoint runs/lm",
    "chat": "voxlm chat --input question.wav --output dialogue.wav --transcript dialogue.json "
            "--checkpoint runs/dialogue",
    "serve": "voxlm serve --port 8998 --max-sessions 8 --checkpoint runs/dialogue",
    "eval codec": "voxlm eval codec --data data/heldout --data data/realset --report reports/codec",
    "eval lm": "voxlm eval lm --report reports/lm --checkpoint runs/lm --data data/tokens --real data/realset",
    "units fit": "voxlm units fit --data data/corpus --out units.npz --k 100",
    "units encode": "voxlm units encode --data data/corpus --units units.npz --out units.jsonl",
    "units abx": "voxlm units abx --data data/corpus --units units.npz",
}


LM_MODES = ("continuation", "interleave", "aligned", "duplex")  # lm.data.MODES, without torch


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


def cmd_codec_train(args):
    from .codec.model import codec_config
    from .codec.train import CodecTask, CodecTrainConfig

    config = CodecTrainConfig(batch_size=args.batch_size, accum=args.accum,
                              segment_frames=args.segment_frames,
                              adversarial_start=args.adversarial_start, max_items=args.max_items)
    _train("codec", CodecTask(args.data, codec_config(args.config), config,
                              progress=not args.quiet), args)


def _train(name: str, task, args, warmup=None, bf16: bool = False):
    """Run `task` in the shared Trainer with the common flags; the main process says where
    the model file went."""
    from .train import TrainConfig, Trainer

    warmup = warmup if warmup is not None else min(500, args.steps // 10 + 1)
    train = TrainConfig(steps=args.steps, save_every=args.save_every, log_every=args.log_every,
                        seed=args.seed, threads=args.threads, warmup=warmup, bf16=bf16)
    trainer = Trainer(task, train, args.out, progress=not args.quiet)
    trainer.run()
    if trainer.dist.main:
        print(f"{name}: {args.out / 'model.safetensors'} after {trainer.step} steps")


def cmd_codec_teacher(args):
    from .codec.teacher import cache_teacher_features
    from .data import read_manifest

    rows = read_manifest(args.data / "manifest.jsonl")
    print(f"teacher features: {cache_teacher_features(args.data, rows, threads=args.threads)} computed")


def cmd_codec_export(args):
    import torch

    from .codec.model import load_codec
    from .codec.train import export_codec
    from .eval.curves import plot_curve

    codec = load_codec(args.run)
    path = export_codec(codec, args.output, dtype=torch.float16, int8=args.int8)
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB")
    curve = args.run / "metrics.jsonl"
    if args.curve and curve.exists():
        print(f"wrote {plot_curve(curve, args.curve, title=f'codec training: {args.run.name}')}")


def cmd_codec_encode(args):
    from .codec.files import encode_file

    shape = encode_file(args.input, args.output, args.checkpoint, args.bitrate)
    print(f"wrote {args.output}: {shape[0]} codebooks x {shape[1]} frames")


def cmd_codec_decode(args):
    from .codec.files import decode_file

    print(f"wrote {args.output}: {decode_file(args.input, args.output, args.checkpoint):.2f} s")


def cmd_codec_roundtrip(args):
    from .codec.files import roundtrip_file

    kbps = roundtrip_file(args.input, args.output, args.checkpoint, args.bitrate, args.streaming)
    print(f"wrote {args.output} at {kbps:g} kbps" + (" (frame by frame)" if args.streaming else ""))


def cmd_lm_tokenize(args):
    from .lm.tokenize_corpus import tokenize_corpus

    result = tokenize_corpus(args.data, args.out, codec=args.codec, tokenizer=args.tokenizer,
                             workers=args.workers, progress=not args.quiet,
                             text_vocab=args.text_vocab, trim=args.trim)
    print(f"tokens: {result.out}: {result.items} items ({result.encoded} encoded now), "
          f"{result.frames} frames in {result.seconds:.1f} s")


def cmd_lm_train(args):
    from .errors import VoxlmError
    from .lm.data import LayoutConfig
    from .lm.model import lm_config
    from .lm.train import LMTask, LMTrainConfig

    if args.shape_only and not args.warm_start:
        raise VoxlmError("--shape-only takes the shape of a --warm-start model, and none was given",
                         "add --warm-start gguf (or a model path), or drop --shape-only")
    layout = LayoutConfig(mode=args.mode, seq_len=args.seq_len, tts_share=args.tts_share,
                          tts_delay=args.tts_delay, asr_delay=args.asr_delay)
    config = LMTrainConfig(batch_size=args.batch_size, accum=args.accum, lr=args.lr,
                           weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                           layout=layout, warm_start=args.warm_start or "",
                           warm_weights=not args.shape_only)
    _train("lm", LMTask(args.data, lm_config(args.config), config, progress=not args.quiet),
           args, warmup=args.warmup, bf16=args.bf16)


def _sampling(args):
    from .lm.generate import SamplingOptions

    return SamplingOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


def _check_output(path: Path):
    from .audio import WRITABLE
    from .errors import VoxlmError

    if path.suffix.lower() not in WRITABLE:
        raise VoxlmError(f"{path}: cannot write '{path.suffix}' files", "use a .wav or .flac name")


def cmd_tts(args):
    from .audio import SAMPLE_RATE, save_audio
    from .lm.speech import check_voice, load_speech_lm, synthesize

    _check_output(args.output)
    check_voice(args.voice)
    model = load_speech_lm(args.checkpoint)
    out = synthesize(model.lm, model.codec(args.codec), model.tokenizer(), args.text,
                     _sampling(args), args.voice, model.layout, seed=args.seed)
    save_audio(args.output, out.audio)
    print(f"wrote {args.output}: {len(out.audio) / SAMPLE_RATE:.2f} s")


def cmd_asr(args):
    from .audio import load_audio
    from .lm.speech import load_speech_lm, transcribe

    audio = load_audio(args.input, max_seconds=args.max_seconds)
    model = load_speech_lm(args.checkpoint)
    print(transcribe(model.lm, model.codec(args.codec), model.tokenizer(), audio, model.layout))


def cmd_continue(args):
    from .audio import SAMPLE_RATE, load_audio, save_audio
    from .lm.speech import continue_speech, load_speech_lm

    _check_output(args.output)
    audio = load_audio(args.input, max_seconds=args.max_seconds)
    model = load_speech_lm(args.checkpoint)
    tokenizer = model.tokenizer() if model.layout.mode == "aligned" else None
    out = continue_speech(model.lm, model.codec(args.codec), audio, args.seconds, _sampling(args),
                          model.layout, tokenizer, seed=args.seed)
    save_audio(args.output, out.audio)
    print(f"wrote {args.output}: {len(out.audio) / SAMPLE_RATE:.2f} s"
          + (f" (the model's text: {out.text})" if out.text else ""))


def _threads(args):
    import torch

    from .errors import VoxlmError

    if args.threads < 1:
        raise VoxlmError(f"--threads {args.threads}", "pass 1 or more")
    torch.set_num_threads(args.threads)


def cmd_chat(args):
    from .audio import SAMPLE_RATE
    from .chat import ChatOptions, chat_file

    _threads(args)
    options = ChatOptions(max_seconds=args.max_seconds, sampling=_sampling(args))
    result = chat_file(args.input, args.output, args.transcript, args.checkpoint, args.codec,
                       options, args.seed)
    step = result.latency["step"]["mean_ms"]
    print(f"wrote {args.output}: {len(result.audio) / SAMPLE_RATE:.2f} s (channel 0 you, 1 the "
          f"model), {len(result.words)} words of inner text, {step:.1f} ms per 80 ms frame"
          + (f"; transcript {args.transcript}" if args.transcript else ""))


def cmd_serve(args):
    from .dialogue import load_dialogue_model
    from .server import DialogueServer, ServerConfig, serve

    _threads(args)
    config = ServerConfig(host=args.host, port=args.port, token=args.token or None,
                          max_sessions=args.max_sessions, sampling=_sampling(args), seed=args.seed,
                          max_session_seconds=args.max_session_seconds)
    server = DialogueServer(load_dialogue_model(args.checkpoint, args.codec), config)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.token:
        print(f"voxlm serve: warning: {args.host} is reachable from other machines and no "
              "--token is set: anyone who reaches it can talk to the model", file=sys.stderr)
    token = f"?token={config.token}" if config.token else ""
    try:
        serve(server, lambda url: print(f"voxlm serve: open {url}{token} (Ctrl-C stops)",
                                        flush=True))
    except KeyboardInterrupt:
        print("voxlm serve: stopped")


def cmd_eval_codec(args):
    from .eval.codec_suite import run_codec_eval

    path = run_codec_eval(args.data, args.report, args.checkpoint, tuple(args.bitrates),
                          args.limit, args.probe_data, not args.no_baselines, not args.quiet)
    print(f"report: {path}")


def cmd_eval_lm(args):
    from .eval.lm import run_lm_eval

    path = run_lm_eval(args.report, args.checkpoint, args.codec, args.data, args.limit, args.real,
                       args.tasks, not args.no_speech, args.speech_limit, args.cache, args.seed,
                       not args.quiet)
    print(f"report: {path}")


def cmd_units_fit(args):
    from .units import fit_units_for_corpus

    units = fit_units_for_corpus(args.data, args.out, k=args.k, max_items=args.max_items)
    print(f"units: {args.out} ({units.k} units)")


def cmd_units_encode(args):
    from .units import encode_corpus

    print(f"wrote {args.out}: {encode_corpus(args.data, args.units, args.out)} items")


def cmd_units_abx(args):
    from .data import read_manifest
    from .units import Units, abx_score

    rows = [r for r in read_manifest(args.data / "manifest.jsonl") if r["split"] != "train"]
    result = abx_score(args.data, Units.load(args.units), rows[: args.max_items])
    print(f"ABX-style word discrimination across held-out speakers ({result.triplets} triplets, "
          f"{result.word_types} words, {result.speakers} speakers; 0.5 is chance):")
    print(f"  units {result.units:.3f}  centroids {result.centroids:.3f}  "
          f"teacher states {result.features:.3f}  states, position removed {result.normalized:.3f}")


def _add_eval_and_units(top, add):
    evaluate = top.add_parser("eval", help=f"measure a stage against peers (e.g. `{EXAMPLES['eval codec']}`)")
    sub = evaluate.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "codec", "eval codec", cmd_eval_codec,
            "codec quality at each bitrate beside Codec2, Opus and Speex on the same files")
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="held-out set with manifest.jsonl (repeatable)")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, help="codec model or run folder (default: shipped)")
    p.add_argument("--bitrates", type=float, nargs="+", default=[0.5, 1.0, 1.5], help="kbps")
    p.add_argument("--limit", type=int, default=30, help="files per set")
    p.add_argument("--probe-data", type=Path, help="corpus with word timings for the codebook probe")
    p.add_argument("--no-baselines", action="store_true", help="only our codec")
    p.add_argument("--quiet", action="store_true")
    p = add(sub, "lm", "eval lm", cmd_eval_lm,
            "LM validation loss per stream, zero-shot spoken minimal pairs (sWUGGY-, sBLIMP-, "
            "tStoryCloze-like) in held-out voices, TTS and ASR word error rates")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, help="LM run folder or model file (default: shipped)")
    p.add_argument("--codec", type=Path,
                   help="codec model or run folder (default: the one the LM's tokens came from)")
    p.add_argument("--data", type=Path, help="tokens folder: validation loss on its held-out splits")
    p.add_argument("--limit", type=int, default=200,
                   help="pairs per zero-shot task and streams per validation layout")
    p.add_argument("--tasks", type=_csv, default=("swuggy", "sblimp", "tstorycloze"),
                   help="comma-separated zero-shot tasks (swuggy,sblimp,tstorycloze; '' for none)")
    p.add_argument("--real", type=Path, help="realset folder (voxlm synth realset) for real-speech ASR")
    p.add_argument("--no-speech", action="store_true", help="skip the TTS and ASR measures")
    p.add_argument("--speech-limit", type=int, default=50, help="utterances per TTS / ASR set")
    p.add_argument("--cache", type=Path, help="synthesized pair audio and codes (default REPORT/cache)")
    p.add_argument("--seed", type=int, default=0, help="pair sampling and generation seed")
    p.add_argument("--quiet", action="store_true")

    units = top.add_parser("units", help=f"GSLM-style k-means units (e.g. `{EXAMPLES['units fit']}`)")
    sub = units.add_subparsers(dest="units_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "fit", "units fit", cmd_units_fit, "fit k-means units on teacher features")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-items", type=int, default=2000)
    p = add(sub, "abx", "units abx", cmd_units_abx,
            "ABX-style word discrimination of units against teacher states, held-out speakers")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--units", required=True, type=Path)
    p.add_argument("--max-items", type=int, default=300)
    p = add(sub, "encode", "units encode", cmd_units_encode, "deduplicated units for every item")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--units", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


def _add_lm(top, add):
    lm = top.add_parser("lm", help=f"tokenize a corpus and train the speech-text LM "
                                   f"(e.g. `{EXAMPLES['lm train']}`)")
    sub = lm.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "tokenize", "lm tokenize", cmd_lm_tokenize,
            "codec codes and text token ids of every corpus item, in parallel (resumable)")
    p.add_argument("--data", required=True, type=Path, help="corpus folder with manifest.jsonl "
                                                            "(monologues or dialogues)")
    p.add_argument("--out", required=True, type=Path, help="tokens folder (resumes if it exists)")
    p.add_argument("--codec", type=Path, help="codec model or run folder (default: shipped)")
    p.add_argument("--tokenizer", type=Path,
                   help="sentencepiece .model for the text (default: Gemma 3's, the warm-start model's)")
    p.add_argument("--text-vocab", type=int, default=0, metavar="N",
                   help="train a sentencepiece of N ids on the corpus words instead (small "
                        "models trained from scratch)")
    p.add_argument("--trim", action="store_true",
                   help="Gemma 3's tokenizer cut to the pieces the corpus words use (a few "
                        "thousand ids; a --warm-start maps them back to Gemma's rows)")
    p.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "train", "lm train", cmd_lm_train,
            "train the LM (one process, or under torchrun for DDP); resumes from --out")
    p.add_argument("--data", required=True, type=Path, help="tokens folder from `voxlm lm tokenize`")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curve)")
    p.add_argument("--mode", choices=LM_MODES, default="aligned",
                   help="stream layout: speech only, SpiRit-LM interleaving, time-aligned text "
                        "(TTS and ASR directions), or full duplex (dialogue corpora)")
    p.add_argument("--config", choices=("tiny", "base"), default="base", help="model size")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (sequences per step)")
    p.add_argument("--accum", type=int, default=1, help="microbatches per step")
    p.add_argument("--seq-len", type=int, default=0, help="frames per sequence (0: the context)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: steps/10, <= 500)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay of matrices")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--tts-share", type=float, default=0.5,
                   help="aligned: share of samples with text leading audio (the rest: ASR)")
    p.add_argument("--tts-delay", type=int, default=25,
                   help="aligned: frames audio lags text (25 = 2 s, Moshi's)")
    p.add_argument("--asr-delay", type=int, default=25,
                   help="aligned: frames text lags audio")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10, help="log every N steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU (always on GPU)")
    p.add_argument("--warm-start", metavar="gguf|PATH",
                   help="initialise the temporal transformer from a text LM: gguf (the shipped "
                        "Gemma 3 270M), a .gguf file or a Hugging Face folder; tokens must use "
                        "its tokenizer (whole, or cut with `lm tokenize --trim`)")
    p.add_argument("--shape-only", action="store_true",
                   help="with --warm-start: its shape and vocabulary, random weights (the "
                        "baseline a warm start is compared with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_speech(top, add):
    def model_flags(p, sampling: bool):
        p.add_argument("--checkpoint", type=Path,
                       help="LM run folder or model file (default: the shipped LM)")
        p.add_argument("--codec", type=Path, help="codec model file or run folder (default: the "
                                                  "one the LM was trained on, else the shipped one)")
        if sampling:
            p.add_argument("--temperature", type=float, default=0.8,
                           help="audio sampling temperature (0: greedy)")
            p.add_argument("--top-k", type=int, default=250, help="sample among the k likeliest codes (0: all)")
            p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling mass (0: off)")
            p.add_argument("--seed", type=int, default=0, help="random seed (it also picks the voice)")

    p = add(top, "tts", "tts", cmd_tts, "speak text with the speech-text LM")
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, type=Path, help=".wav or .flac file")
    p.add_argument("--voice", help="voice; the LM has no voice conditioning, so only 'default'")
    model_flags(p, sampling=True)
    p = add(top, "asr", "asr", cmd_asr, "print the text of a speech file, by the speech-text LM")
    p.add_argument("input", type=Path)
    p.add_argument("--max-seconds", type=float, default=120.0, help="reject longer files")
    model_flags(p, sampling=False)
    p = add(top, "continue", "continue", cmd_continue,
            "continue a speech file with the speech-text LM (the prompt, then more)")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help=".wav or .flac file")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds generated after the prompt")
    p.add_argument("--max-seconds", type=float, default=120.0, help="reject longer prompts")
    model_flags(p, sampling=True)


def _add_dialogue(top, add):
    import os

    def flags(p):
        p.add_argument("--checkpoint", type=Path, help="dialogue model: an LM run folder or model "
                                                       "file trained with --mode duplex")
        p.add_argument("--codec", type=Path, help="codec model file or run folder (default: the "
                                                  "one the LM was trained on, else the shipped one)")
        p.add_argument("--temperature", type=float, default=0.8, help="audio sampling temperature")
        p.add_argument("--top-k", type=int, default=250, help="sample among the k likeliest codes")
        p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling mass (0: off)")
        p.add_argument("--seed", type=int, default=0, help="random seed (it also picks the voice)")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads (1 suits one frame at a time; more may help many sessions)")

    p = add(top, "chat", "chat", cmd_chat, "talk to the dialogue model with a file: your audio, "
            "then its answer, as a stereo wav (channel 0 you, 1 the model) and a transcript")
    p.add_argument("--input", required=True, type=Path, help="your audio (any rate: resampled)")
    p.add_argument("--output", required=True, type=Path, help="stereo .wav or .flac")
    p.add_argument("--transcript", type=Path, help="JSON: the model's inner text, word timings, "
                                                   "latency per stage")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="longest dialogue written (default: the input plus 30 s)")
    flags(p)
    p = add(top, "serve", "serve", cmd_serve, "serve the dialogue model: a web page to talk to it "
            "and a websocket API (docs/PROTOCOL.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this "
                                                       "machine only)")
    p.add_argument("--port", type=int, default=8998, help="TCP port (0: any free one)")
    p.add_argument("--token", default=os.environ.get("VOXLM_TOKEN"),
                   help="require ?token=T to talk (default: $VOXLM_TOKEN, else none)")
    p.add_argument("--max-sessions", type=int, default=4, help="conversations at once")
    p.add_argument("--max-session-seconds", type=float, default=1800.0,
                   help="a conversation ends after this long")
    flags(p)


def _add_codec(top, add):
    codec = top.add_parser("codec", help="train and run the speech codec "
                                         f"(e.g. `{EXAMPLES['codec roundtrip']}`)")
    sub = codec.add_subparsers(dest="codec_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "train", "codec train", cmd_codec_train,
            "train a codec (one process, or under torchrun for DDP); resumes from --out")
    p.add_argument("--data", required=True, type=Path, help="corpus folder with manifest.jsonl")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curve)")
    p.add_argument("--config", choices=("tiny", "base"), default="base", help="model size")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="global batch (segments per step)")
    p.add_argument("--accum", type=int, default=1, help="microbatches per step")
    p.add_argument("--segment-frames", type=int, default=24, help="80 ms frames per segment")
    p.add_argument("--adversarial-start", type=int, default=2000, help="step the GAN losses start")
    p.add_argument("--max-items", type=int, default=0, help="use only the first N items (0: all)")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10, help="log every N steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "teacher", "codec teacher", cmd_codec_teacher,
            "cache Whisper tiny.en encoder states for a corpus (resumable)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--threads", type=int, default=2)

    p = add(sub, "export", "codec export", cmd_codec_export,
            "a run's weights as a small inference file (fp16, or int8 matrices)")
    p.add_argument("run", type=Path, help="run folder or model file")
    p.add_argument("output", type=Path)
    p.add_argument("--int8", action="store_true", help="int8 weight matrices with per-row scales")
    p.add_argument("--curve", type=Path, help="also plot the run's training curve to this PNG")

    for name, func, help in (("encode", cmd_codec_encode, "audio file to codes (.npy int16 [K, T])"),
                             ("decode", cmd_codec_decode, "codes (.npy) to a wav file"),
                             ("roundtrip", cmd_codec_roundtrip, "encode and decode an audio file")):
        p = add(sub, name, f"codec {name}", func, help)
        p.add_argument("input", type=Path)
        p.add_argument("output", type=Path)
        p.add_argument("--checkpoint", type=Path, help="model file or run folder (default: shipped)")
        if name != "decode":
            p.add_argument("--bitrate", type=float, help="kbps (default: the codec's highest)")
        if name == "roundtrip":
            p.add_argument("--streaming", action="store_true", help="run frame by frame, as live")


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

    _add_codec(top, add)
    _add_lm(top, add)
    _add_speech(top, add)
    _add_dialogue(top, add)
    _add_eval_and_units(top, add)

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
    except OSError as exc:  # the file system refused: a file in the way, no permission, disk full
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        blocked = isinstance(exc, (FileExistsError, NotADirectoryError))
        reason = "a file is where a folder should be" if blocked else exc.strerror or exc
        print(f"voxlm: error: {where}{reason}; check the path, its permissions and free disk space",
              file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line, and how to see more
        if args.debug:
            raise
        print(f"voxlm: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
