"""What each `voxlm` subcommand does: one function per command, taking the parsed flags and
calling the library (imported inside each function, so `voxlm --help` stays fast). The parser
that binds flags to these functions is `cli.py`.
"""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_synth_corpus(args):
    from .synth.corpus import CorpusConfig, synthesize_corpus

    config = CorpusConfig(minutes=args.minutes, engines=args.engines, voices=args.voices,
                          sources=args.sources, text_files=tuple(args.text or ()),
                          augment=args.augment, seed=args.seed, workers=args.workers)
    manifest = synthesize_corpus(args.out, config, progress=not args.quiet)
    print(f"corpus: {manifest}")


def cmd_synth_dialogues(args):
    from .errors import VoxlmError
    from .synth.dialogue import DialogueConfig, synthesize_dialogues

    if not 0.0 <= args.qa_share <= 1.0:
        raise VoxlmError(f"--qa-share {args.qa_share} is outside 0..1", "pass e.g. --qa-share 0.4")
    try:
        weights = tuple(float(w) for w in args.qa_weights)
    except ValueError:
        weights = ()
    if len(weights) != 4 or min(weights) < 0 or sum(weights) <= 0:
        raise VoxlmError(f"--qa-weights {','.join(args.qa_weights)}",
                         "give four non-negative numbers, not all zero, for arithmetic,counting,"
                         "spelling,fact (e.g. 4,1,1,2)")
    if not 0.0 <= args.user_shift <= 12.0:
        raise VoxlmError(f"--user-shift {args.user_shift}",
                         "pass 0 (off) up to 12 semitones, e.g. 4")
    config = DialogueConfig(seed=args.seed, assistant_voice=args.assistant_voice,
                            qa_share=args.qa_share, qa_weights=weights, user_shift=args.user_shift)
    manifest = synthesize_dialogues(args.out, args.count, config, workers=args.workers,
                                    progress=not args.quiet)
    print(f"dialogues: {manifest}")


def cmd_synth_turns(args):
    from .synth.turns import speaker_turns

    manifest = speaker_turns(args.data, args.out, args.speaker, args.channel,
                             progress=not args.quiet)
    print(f"corpus: {manifest}")


def cmd_synth_answers(args):
    from .data import write_atomic
    from .errors import VoxlmError
    from .synth.text import every_answer

    if not 0 <= args.max_operand <= 99:
        raise VoxlmError(f"--max-operand {args.max_operand}", "pass 0 to 99, e.g. 12")
    lines = every_answer(args.max_operand)
    write_atomic(args.out, ("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {args.out}: {len(lines)} answers")


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


def cmd_data_import(args):
    from .importers import import_corpus

    result = import_corpus(args.format, args.src, args.out, limit=args.limit, workers=args.workers,
                           align=not args.no_align, segment_seconds=args.segment_seconds,
                           audio_format=args.audio_format, progress=not args.quiet)
    print(f"corpus: {result.manifest}: {result.items} items, {result.hours:.2f} h from "
          f"{result.units} files ({result.imported} imported now) in {result.seconds:.1f} s")
    if result.note:
        print(f"voxlm data import: {result.note}", file=sys.stderr)
    if result.skipped:
        print(f"voxlm data import: {len(result.skipped)} files skipped (listed in "
              f"{args.out / 'skipped.jsonl'}), the first: {result.skipped[0][1]}", file=sys.stderr)


def cmd_demo(args):
    import torch

    from .demo import run_demo

    torch.set_num_threads(1)  # one frame at a time: 1 thread is fastest (chat's default too)
    run_demo(args.out, args.checkpoint, args.questions, args.seed, int8=not args.fp32,
             progress=not args.quiet)


def cmd_codec_train(args):
    from dataclasses import replace

    from .codec.model import codec_config
    from .codec.train import CodecTask, CodecTrainConfig
    from .errors import VoxlmError

    config = CodecTrainConfig(batch_size=args.batch_size, accum=args.accum,
                              segment_frames=args.segment_frames,
                              adversarial_start=args.adversarial_start, max_items=args.max_items,
                              lr=args.lr, init=str(args.init or ""), decoder_only=args.decoder_only,
                              semantic_only=args.semantic_only,
                              pitch_weight=args.pitch_weight, pitch_shift=args.pitch_shift)
    if not args.lr > 0:
        raise VoxlmError(f"--lr is {args.lr}", "pass a positive learning rate, e.g. 3e-4")
    if not args.pitch_weight >= 0:
        raise VoxlmError(f"--pitch-weight is {args.pitch_weight}", "pass 0 or more, e.g. 5")
    if not 0 <= args.pitch_shift <= 12:
        raise VoxlmError(f"--pitch-shift is {args.pitch_shift}",
                         "pass semitones from 0 to 12, e.g. 5")
    if not 0 <= args.semantic_layers <= 32:
        raise VoxlmError(f"--semantic-layers is {args.semantic_layers}", "pass 0 to 32, e.g. 4")
    if args.semantic_dim < 0 or args.semantic_dim % 8:
        raise VoxlmError(f"--semantic-dim is {args.semantic_dim}",
                         "pass a multiple of 8, e.g. 256 (0: the encoder's width)")
    if not 1 <= args.semantic_ff_mult <= 8:
        raise VoxlmError(f"--semantic-ff-mult is {args.semantic_ff_mult}", "pass 1 to 8, e.g. 2")
    model = replace(codec_config(args.config), decoder_codebooks=args.decoder_codebooks,
                    semantic_layers=args.semantic_layers, semantic_dim=args.semantic_dim,
                    semantic_ff_mult=args.semantic_ff_mult)
    _train("codec", CodecTask(args.data, model, config, progress=not args.quiet), args)


def _train(name: str, task, args, warmup=None, bf16: bool = False, fsdp: bool = False):
    """Run `task` in the shared Trainer with the common flags; the main process says where
    the model file went."""
    from .train import TrainConfig, Trainer

    warmup = warmup if warmup is not None else min(500, args.steps // 10 + 1)
    train = TrainConfig(steps=args.steps, stop_at=args.stop_at, save_every=args.save_every,
                        log_every=args.log_every,
                        seed=args.seed, threads=args.threads, warmup=warmup, bf16=bf16,
                        fsdp=fsdp)
    trainer = Trainer(task, train, args.out, progress=not args.quiet)
    trainer.run()
    if trainer.dist.main:
        print(f"{name}: {args.out / 'model.safetensors'} after {trainer.step} steps")
        if trainer.best_step is not None:
            print(f"{name}: best valid_loss {trainer.best_valid_loss:.4f} at step "
                  f"{trainer.best_step}: {args.out / 'best.safetensors'}")


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
    path = export_codec(codec, args.output, dtype=torch.float16, int8=args.int8,
                        voice=args.voice)
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB")
    curve = args.run / "metrics.jsonl"
    if args.curve and curve.exists():
        print(f"wrote {plot_curve(curve, args.curve, title=f'codec training: {args.run.name}')}")


def cmd_codec_encode(args):
    from .codec.files import encode_file

    shape = encode_file(args.input, args.output, args.checkpoint, args.bitrate, args.pitch)
    print(f"wrote {args.output}: {shape[0]} codebooks x {shape[1]} frames"
          + (", with the input's pitch" if args.pitch else ""))


def cmd_codec_decode(args):
    from .codec.files import decode_file

    print(f"wrote {args.output}: {decode_file(args.input, args.output, args.checkpoint):.2f} s")


def cmd_codec_roundtrip(args):
    from .codec.files import roundtrip_file

    kbps = roundtrip_file(args.input, args.output, args.checkpoint, args.bitrate, args.streaming,
                          args.pitch)
    print(f"wrote {args.output} at {kbps:g} kbps" + (" with the input's pitch" if args.pitch else "")
          + (" (frame by frame)" if args.streaming else ""))


def cmd_lm_tokenize(args):
    from .lm.tokenize_corpus import tokenize_corpus

    result = tokenize_corpus(args.data, args.out, codec=args.codec, tokenizer=args.tokenizer,
                             workers=args.workers, progress=not args.quiet,
                             text_vocab=args.text_vocab, trim=args.trim)
    print(f"tokens: {result.out}: {result.items} items ({result.encoded} encoded now), "
          f"{result.frames} frames in {result.seconds:.1f} s")


def cmd_lm_train(args):
    from .lm.data import LayoutConfig
    from .lm.model import lm_config
    from .lm.train import LMTask, LMTrainConfig

    layout = LayoutConfig(mode=args.mode, seq_len=args.seq_len, tts_share=args.tts_share,
                          tts_delay=args.tts_delay, asr_delay=args.asr_delay,
                          listen_delay=args.listen_delay,
                          text_file=str(args.text or ""), text_share=args.text_share)
    config = LMTrainConfig(batch_size=args.batch_size, accum=args.accum, lr=args.lr,
                           weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                           text_weight=args.text_weight, semantic_weight=args.semantic_weight,
                           layout=layout, warm_start=args.warm_start or "",
                           warm_weights=not args.shape_only, init=str(args.init or ""),
                           init_other_codec=args.init_other_codec, valid_every=args.valid_every,
                           valid_limit=args.valid_limit, dropout=args.dropout,
                           listen_weight=args.listen_weight,
                           user_codebooks=args.user_codebooks)
    _train("lm", LMTask(args.data, lm_config(args.config), config, progress=not args.quiet),
           args, warmup=args.warmup, bf16=args.bf16, fsdp=args.fsdp)


def cmd_lm_export(args):
    import torch

    from .data import write_atomic
    from .errors import VoxlmError
    from .eval.curves import plot_curve
    from .lm.model import read_audio_tables, save_lm
    from .lm.speech import load_speech_lm

    if args.keep_int8 and not args.int4:
        raise VoxlmError("--keep-int8 chooses what --int4 leaves at int8", "add --int4")
    speech = load_speech_lm(args.run)
    weights = list(speech.lm.state_dict())
    unknown = [k for k in args.keep_int8 if not any(name.startswith(k) for name in weights)]
    if unknown:
        names = sorted({name.split(".")[0] for name in weights})
        raise VoxlmError(f"--keep-int8 {' '.join(unknown)}: no weight of this LM is named so",
                         f"give names its weights start with: {', '.join(names)}")
    tokenizer = speech.tokenizer()  # checked against the one the LM was trained with
    path = save_lm(args.output, speech.lm, dtype=torch.float16, int8=args.int8, extra=speech.extra,
                   int4=args.int4, keep_int8=tuple(args.keep_int8),
                   read_tables=read_audio_tables(speech.lm.config, speech.layout.mode))
    beside = args.output.with_suffix(".tokenizer.model")
    write_atomic(beside, tokenizer.model_proto)
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB, and {beside.name}")
    curve = speech.path.parent / "metrics.jsonl"
    if args.curve and curve.exists():
        print(f"wrote {plot_curve(curve, args.curve, title=f'LM training: {speech.path.parent.name}')}")


def _sampling(args):
    from .lm.generate import SamplingOptions

    return SamplingOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           text_temperature=args.text_temperature, text_top_k=args.text_top_k,
                           pad_temperature=args.pad_temperature)


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


def cmd_convert(args):
    from .audio import SAMPLE_RATE, load_audio, save_audio
    from .convert import convert_voice
    from .lm.speech import load_speech_lm

    _check_output(args.output)
    source = load_audio(args.input, max_seconds=args.max_seconds)
    target = load_audio(args.voice, max_seconds=args.max_seconds)
    model = load_speech_lm(args.checkpoint)
    out = convert_voice(model.lm, model.codec(args.codec), source, target, _sampling(args),
                        model.layout, prompt_seconds=args.prompt_seconds, seed=args.seed,
                        keep=args.keep_codebooks)
    save_audio(args.output, out.audio)
    print(f"wrote {args.output}: {len(out.audio) / SAMPLE_RATE:.2f} s in the voice of {args.voice}")


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
    options = ChatOptions(max_seconds=args.max_seconds, sampling=_sampling(args),
                          int8=args.int8)
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
                          max_session_seconds=args.max_session_seconds,
                          idle_seconds=args.idle_seconds, int8=not args.fp32)
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
                          args.limit, args.probe_data, not args.no_baselines, not args.quiet,
                          compare=args.compare, pitch_bitrates=tuple(args.pitch_bitrates))
    print(f"report: {path}")


def cmd_eval_lm(args):
    from .eval.lm import run_lm_eval

    path = run_lm_eval(args.report, args.checkpoint, args.codec, args.data, args.limit, args.real,
                       args.tasks, not args.no_speech, args.speech_limit, args.cache, args.seed,
                       not args.quiet)
    print(f"report: {path}")


def cmd_eval_dialogue(args):
    from .eval.dialogue import run_dialogue_eval

    _threads(args)
    path = run_dialogue_eval(args.report, args.checkpoint, args.codec, args.data, args.limit,
                             args.seed, _sampling(args), not args.quiet, seeds=args.seeds,
                             int8=args.int8)
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
