"""`voxlm` command line: each subcommand parses flags and calls one library function.

Errors in the input print one line, `voxlm: error: <problem>; <fix>`, and exit 2; `--debug`
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import commands

EXAMPLES = {
    "synth turns": "voxlm synth turns --data data/qa --out data/assistant_voice --speaker piper:joe",
    "synth corpus": "voxlm synth corpus --out data/corpus --minutes 30 --voices 16",
    "synth dialogues": "voxlm synth dialogues --out data/dialogues --count 200",
    "synth stats": "voxlm synth stats data/dialogues",
    "synth answers": "voxlm synth answers --out data/answers.txt",
    "synth realset": "voxlm synth realset --out data/realset",
    "synth voices": "voxlm synth voices",
    "synth say": "voxlm synth say \"Hello there.\" -o hello.wav --voice flite:slt",
    "audio info": "voxlm audio info speech.mp3",
    "audio convert": "voxlm audio convert speech.mp3 speech.wav --normalize",
    "data import": "voxlm data import --format librispeech --src /corpora/LibriSpeech --out data/librispeech",
    "demo": "voxlm demo --out voxlm-demo --questions 3",
    "codec train": "voxlm codec train --data data/corpus --out runs/codec --config base --steps 20000",
    "codec encode": "voxlm codec encode speech.wav codes.npy --bitrate 1.0",
    "codec decode": "voxlm codec decode codes.npy speech.wav",
    "codec roundtrip": "voxlm codec roundtrip speech.wav out.wav --streaming --bitrate 1.5 --pitch",
    "codec teacher": "voxlm codec teacher --data data/corpus",
    "codec export": "voxlm codec export runs/codec voxlm/assets/codec.safetensors --int8",
    "lm tokenize": "voxlm lm tokenize --data data/corpus --out data/tokens --workers 2",
    "lm train": "voxlm lm train --data data/tokens --out runs/lm --mode aligned --config base --steps 20000",
    "lm export": "voxlm lm export runs/dialogue voxlm/assets/dialogue.safetensors --int8",
    "tts": "voxlm tts \"Hello there, how are you?\" -o hello.wav --checkpoint runs/lm",
    "asr": "voxlm asr speech.wav --checkpoint runs/lm",
    "continue": "voxlm continue prompt.wav -o more.wav --seconds 5 --checkpoint runs/lm",
    "convert": "voxlm convert speech.wav --voice target.wav -o converted.wav --checkpoint runs/lm",
    "chat": "voxlm chat --input question.wav --output dialogue.wav --transcript dialogue.json "
            "--checkpoint runs/dialogue",
    "serve": "voxlm serve --port 8998 --max-sessions 8 --checkpoint runs/dialogue",
    "eval codec": "voxlm eval codec --data data/heldout --data data/realset --report reports/codec",
    "eval lm": "voxlm eval lm --report reports/lm --checkpoint runs/lm --data data/tokens --real data/realset",
    "eval dialogue": "voxlm eval dialogue --report reports/dialogue --checkpoint runs/dialogue "
                     "--data data/dialogues --limit 20",
    "units fit": "voxlm units fit --data data/corpus --out units.npz --k 100",
    "units encode": "voxlm units encode --data data/corpus --units units.npz --out units.jsonl",
    "units abx": "voxlm units abx --data data/corpus --units units.npz",
}


LM_MODES = ("continuation", "interleave", "aligned", "duplex")  # lm.data.MODES, without torch
PAD_TEMPERATURE = 1.0  # lm.generate.SamplingOptions.pad_temperature, without torch
IMPORT_FORMATS = ("librispeech", "librilight", "fisher")  # importers.FORMATS


DIALOGUE_CODEC_HELP = ("codec model file or run folder (default: the one the LM was trained on, "
                       "else the shipped one; a model on the shipped codec's codes speaks through "
                       "the shipped voice decoder, voxlm/assets/voice.safetensors: pass "
                       "--codec voxlm/assets/codec.safetensors for the codec's own decoder)")


def _csv(value: str) -> tuple:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _add_eval_and_units(top, add):
    evaluate = top.add_parser("eval", help=f"measure a stage against peers (e.g. `{EXAMPLES['eval codec']}`)")
    sub = evaluate.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "codec", "eval codec", commands.cmd_eval_codec,
            "codec quality at each bitrate beside Codec2, Opus and Speex on the same files")
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="held-out set with manifest.jsonl (repeatable)")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, help="codec model or run folder (default: shipped)")
    p.add_argument("--compare", type=Path, action="append", default=[],
                   help="another codec file or run folder scored on the same files (repeatable)")
    p.add_argument("--bitrates", type=float, nargs="+", default=[0.5, 1.0, 1.5], help="kbps")
    p.add_argument("--pitch-bitrates", type=float, nargs="*", default=[1.5],
                   help="kbps budgets at which the codec is also scored with the input's pitch "
                        "sent beside its codes (`codec roundtrip --pitch`; none: leave it out)")
    p.add_argument("--limit", type=int, default=30, help="files per set")
    p.add_argument("--probe-data", type=Path, help="corpus with word timings for the codebook probe")
    p.add_argument("--no-baselines", action="store_true", help="only our codec")
    p.add_argument("--quiet", action="store_true")
    p = add(sub, "lm", "eval lm", commands.cmd_eval_lm,
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
    p = add(sub, "dialogue", "eval dialogue", commands.cmd_eval_dialogue,
            "the dialogue model replying live to held-out dialogues: turn-taking statistics "
            "and response latency beside the reference, spoken QA accuracy (Whisper)")
    p.add_argument("--report", required=True, type=Path, help="report folder")
    p.add_argument("--checkpoint", type=Path, help="dialogue model: LM run folder or model file "
                                                   "trained with --mode duplex (default: shipped)")
    p.add_argument("--codec", type=Path, help=DIALOGUE_CODEC_HELP)
    p.add_argument("--data", type=Path, default=Path("data/dialogues"),
                   help="dialogue corpus (voxlm synth dialogues); its held-out voices are used")
    p.add_argument("--limit", type=int, default=20, help="dialogues (split test first, then valid)")
    sampling_flags(p)
    p.add_argument("--seed", type=int, default=0, help="generation seed (dialogue i uses seed + i)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="conversations per dialogue, each with its own seed, pooled in every "
                        "figure (one seed's sampling moves the QA measures by several points)")
    p.add_argument("--int8", action="store_true",
                   help="the LM's matrix products with int8 weights, as `voxlm serve` and `voxlm "
                        "demo` run it (default: fp32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quiet", action="store_true")

    units = top.add_parser("units", help=f"GSLM-style k-means units (e.g. `{EXAMPLES['units fit']}`)")
    sub = units.add_subparsers(dest="units_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "fit", "units fit", commands.cmd_units_fit, "fit k-means units on teacher features")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-items", type=int, default=2000)
    p = add(sub, "abx", "units abx", commands.cmd_units_abx,
            "ABX-style word discrimination of units against teacher states, held-out speakers")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--units", required=True, type=Path)
    p.add_argument("--max-items", type=int, default=300)
    p = add(sub, "encode", "units encode", commands.cmd_units_encode, "deduplicated units for every item")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--units", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)


def _add_lm(top, add):
    lm = top.add_parser("lm", help=f"tokenize a corpus and train the speech-text LM "
                                   f"(e.g. `{EXAMPLES['lm train']}`)")
    sub = lm.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "tokenize", "lm tokenize", commands.cmd_lm_tokenize,
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

    p = add(sub, "train", "lm train", commands.cmd_lm_train,
            "train the LM (one process, or under torchrun for DDP); resumes from --out")
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="tokens folder from `voxlm lm tokenize` (repeat to train on several, "
                        "tokenized with the same codec and tokenizer)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curve)")
    p.add_argument("--mode", choices=LM_MODES, default="aligned",
                   help="stream layout: speech only, SpiRit-LM interleaving, time-aligned text "
                        "(TTS and ASR directions), or full duplex (dialogue corpora)")
    p.add_argument("--config", choices=("tiny", "small", "base"), default="base", help="model size")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="global batch (sequences per step)")
    p.add_argument("--accum", type=int, default=1, help="microbatches per step")
    p.add_argument("--seq-len", type=int, default=0, help="frames per sequence (0: the context)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: steps/10, <= 500)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW decay of matrices")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout of the temporal transformer's input and residual branches in "
                        "training, against overfitting a small corpus (with --init: replaces its)")
    p.add_argument("--text-weight", type=float, default=1.0,
                   help="weight of the text loss against the audio loss")
    p.add_argument("--semantic-weight", type=float, default=1.0,
                   help="weight of codebook 1 against each other codebook (Moshi: 100)")
    p.add_argument("--listen-weight", type=float, default=0.0,
                   help="duplex: > 0 adds a listen head that writes down the user's words as "
                        "they are heard (an auxiliary ASR loss of this weight; 0: none)")
    p.add_argument("--user-codebooks", type=int, default=-1, metavar="K",
                   help="duplex: read only the user's codebooks 1..K (1: the semantic one, the "
                        "words without the voice; 0: all; default: --init's, else all)")
    p.add_argument("--listen-delay", type=int, default=3,
                   help="duplex with --listen-weight: frames the user's text lags their audio")
    p.add_argument("--text", type=Path, metavar="FILE",
                   help="aligned, duplex: mix text-alone samples made of this file's lines into "
                        "training (audio not scored there), e.g. every answer of `voxlm synth "
                        "answers`: facts the spoken corpus holds a few times each")
    p.add_argument("--text-share", type=float, default=0.2,
                   help="with --text: share of training samples that are text alone")
    p.add_argument("--tts-share", type=float, default=0.5,
                   help="aligned: share of samples with text leading audio (the rest: ASR)")
    p.add_argument("--tts-delay", type=int, default=25,
                   help="aligned: frames audio lags text (25 = 2 s, Moshi's)")
    p.add_argument("--asr-delay", type=int, default=25,
                   help="aligned: frames text lags audio")
    loop_flags(p)
    p.add_argument("--valid-every", type=int, default=0, metavar="N",
                   help="held-out loss on split valid every N steps and at the last, logged as "
                        "valid_loss; the best step's weights go to RUN/best.safetensors (0: off)")
    p.add_argument("--valid-limit", type=int, default=50, metavar="S",
                   help="streams of split valid the held-out loss is computed on")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CPU (always on GPU)")
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard weights, gradients and optimizer state over the "
                        "processes (FSDP2) instead of DDP, for models too large for one device")
    p.add_argument("--warm-start", metavar="gguf|PATH",
                   help="initialise the temporal transformer from a text LM: gguf (the shipped "
                        "Gemma 3 270M), a .gguf file or a Hugging Face folder; tokens must use "
                        "its tokenizer (whole, or cut with `lm tokenize --trim`)")
    p.add_argument("--init", type=Path, metavar="RUN|MODEL",
                   help="start from this run's (or model file's) weights and config, with a fresh "
                        "optimizer and schedule: fine-tuning; its tokenizer and codec must be the "
                        "tokens' (--config is ignored). A speech run into --mode duplex: its "
                        "model-audio tables also start the user-audio ones")
    p.add_argument("--init-other-codec", action="store_true",
                   help="with --init: the tokens come from another codec than its own (e.g. one "
                        "with a new codebook 1); its audio tables start from the old codes' and "
                        "learn the new ones")
    p.add_argument("--shape-only", action="store_true",
                   help="with --warm-start: its shape and vocabulary, random weights (the "
                        "baseline a warm start is compared with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "export", "lm export", commands.cmd_lm_export,
            "a run's LM as a small inference file (fp16, or int8 matrices) with its tokenizer")
    p.add_argument("run", type=Path, help="run folder or model file")
    p.add_argument("output", type=Path, help="model file (.safetensors); the tokenizer goes "
                                             "beside it as <name>.tokenizer.model")
    p.add_argument("--int8", action="store_true", help="int8 weight matrices with per-row scales")
    p.add_argument("--int4", action="store_true",
                   help="int4 weight matrices with a scale per 32 weights (about half of --int8's "
                        "bytes; matrices whose last dimension 32 does not divide stay int8)")
    p.add_argument("--keep-int8", nargs="+", default=[], metavar="NAME",
                   help="with --int4: weights whose names start with NAME stay int8 (e.g. "
                        "audio_emb, the audio embedding tables, where int4 can move when a "
                        "dialogue model starts to speak)")
    p.add_argument("--curve", type=Path, help="also plot the run's training curve to this PNG")


def loop_flags(p):
    """The training loop's flags of `lm train` and `codec train` (commands._train reads them)."""
    p.add_argument("--stop-at", type=int, default=0, metavar="STEP",
                   help="end the run at this step, saved, with the learning-rate schedule still "
                        "that of --steps (0: run all; run again without it to go on)")
    p.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=10, help="log every N steps")


def sampling_flags(p):
    """The audio sampling flags of every generating command (commands._sampling reads them)."""
    p.add_argument("--temperature", type=float, default=0.8,
                   help="audio sampling temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=250, help="sample among the k likeliest codes (0: all)")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling mass (0: off)")
    p.add_argument("--text-temperature", type=float, default=0.7,
                   help="text-token sampling temperature (0: greedy)")
    p.add_argument("--text-top-k", type=int, default=25, help="sample text among the k likeliest ids")
    p.add_argument("--pad-temperature", type=float, default=PAD_TEMPERATURE,
                   help="temperature of the text token's first choice, pad (silent, waiting) or "
                        "not, before the id itself at --text-temperature (0: one draw at "
                        "--text-temperature)")


def _add_speech(top, add):
    def model_flags(p, sampling: bool):
        p.add_argument("--checkpoint", type=Path,
                       help="LM run folder or model file (default: the shipped LM)")
        p.add_argument("--codec", type=Path, help="codec model file or run folder (default: the "
                                                  "one the LM was trained on, else the shipped one)")
        if sampling:
            sampling_flags(p)
            p.add_argument("--seed", type=int, default=0, help="random seed (it also picks the voice)")

    p = add(top, "tts", "tts", commands.cmd_tts, "speak text with the speech-text LM")
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, type=Path, help=".wav or .flac file")
    p.add_argument("--voice", help="voice; the LM has no voice conditioning, so only 'default'")
    model_flags(p, sampling=True)
    p = add(top, "asr", "asr", commands.cmd_asr, "print the text of a speech file, by the speech-text LM")
    p.add_argument("input", type=Path)
    p.add_argument("--max-seconds", type=float, default=120.0, help="reject longer files")
    model_flags(p, sampling=False)
    p = add(top, "continue", "continue", commands.cmd_continue,
            "continue a speech file with the speech-text LM (the prompt, then more)")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help=".wav or .flac file")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds generated after the prompt")
    p.add_argument("--max-seconds", type=float, default=120.0, help="reject longer prompts")
    model_flags(p, sampling=True)
    p = add(top, "convert", "convert", commands.cmd_convert,
            "say what a speech file says in another voice (its codebook 1, the target's acoustics)")
    p.add_argument("input", type=Path, help="speech whose content is kept")
    p.add_argument("--voice", required=True, type=Path, help="speech in the target voice")
    p.add_argument("-o", "--output", required=True, type=Path, help=".wav or .flac file")
    p.add_argument("--prompt-seconds", type=float, default=6.0,
                   help="seconds of the target voice the LM is prompted with")
    p.add_argument("--keep-codebooks", type=int, default=1, metavar="K",
                   help="the source's codebooks 1..K are kept, the rest generated in the target "
                        "voice (1: only the semantic one; more keeps its words more surely, and "
                        "more of its voice)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="reject longer files")
    model_flags(p, sampling=True)


def _add_dialogue(top, add):
    import os

    def flags(p):
        p.add_argument("--checkpoint", type=Path, help="dialogue model: an LM run folder or model "
                                                       "file trained with --mode duplex")
        p.add_argument("--codec", type=Path, help=DIALOGUE_CODEC_HELP)
        sampling_flags(p)
        p.add_argument("--seed", type=int, default=0, help="random seed (it also picks the voice)")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads (1 suits one frame at a time; more may help many sessions)")

    p = add(top, "chat", "chat", commands.cmd_chat, "talk to the dialogue model with a file: your audio, "
            "then its answer, as a stereo wav (channel 0 you, 1 the model) and a transcript")
    p.add_argument("--input", required=True, type=Path, help="your audio (any rate: resampled)")
    p.add_argument("--output", required=True, type=Path, help="stereo .wav or .flac")
    p.add_argument("--transcript", type=Path, help="JSON: the model's inner text, word timings, "
                                                   "latency per stage")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="longest dialogue written (default: the input plus 30 s)")
    p.add_argument("--int8", action="store_true",
                   help="the LM's matrix products with int8 weights, as `voxlm serve` runs it "
                        "(default: fp32)")
    flags(p)
    p = add(top, "serve", "serve", commands.cmd_serve, "serve the dialogue model: a web page to talk to it "
            "and a websocket API (docs/PROTOCOL.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this "
                                                       "machine only)")
    p.add_argument("--port", type=int, default=8998, help="TCP port (0: any free one)")
    p.add_argument("--token", default=os.environ.get("VOXLM_TOKEN"),
                   help="require ?token=T to talk (default: $VOXLM_TOKEN, else none)")
    p.add_argument("--max-sessions", type=int, default=4, help="conversations at once")
    p.add_argument("--max-session-seconds", type=float, default=1800.0,
                   help="a conversation ends after this long")
    p.add_argument("--idle-seconds", type=float, default=60.0,
                   help="a conversation whose client sends nothing for this long ends")
    p.add_argument("--fp32", action="store_true",
                   help="run the LM in fp32 (default: int8 weights, 1.3x faster per step; 8 "
                        "sessions keep real time on 2 cores only with int8)")
    flags(p)


def _add_codec(top, add):
    codec = top.add_parser("codec", help="train and run the speech codec "
                                         f"(e.g. `{EXAMPLES['codec roundtrip']}`)")
    sub = codec.add_subparsers(dest="codec_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "train", "codec train", commands.cmd_codec_train,
            "train a codec (one process, or under torchrun for DDP); resumes from --out")
    p.add_argument("--data", required=True, type=Path, help="corpus folder with manifest.jsonl")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, curve)")
    p.add_argument("--config", choices=("tiny", "base"), default="base", help="model size")
    p.add_argument("--steps", type=int, default=20000, help="total optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="global batch (segments per step)")
    p.add_argument("--accum", type=int, default=1, help="microbatches per step")
    p.add_argument("--segment-frames", type=int, default=24, help="80 ms frames per segment")
    p.add_argument("--adversarial-start", type=int, default=2000, help="step the GAN losses start")
    p.add_argument("--lr", type=float, default=1e-3, help="the codec's peak learning rate")
    p.add_argument("--pitch-weight", type=float, default=5.0,
                   help="weight of the F0 and voicing losses (harmonic vocoder)")
    p.add_argument("--pitch-shift", type=float, default=0.0,
                   help="resample half the segments by up to this many semitones either way "
                        "(voices outside the corpus's pitch range)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this codec file or run folder (same --config)")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train only the decoding side; codes (and every token "
                        "already written with them) stay the same")
    p.add_argument("--decoder-codebooks", type=int, default=0, metavar="K",
                   help="with --decoder-only: a voice decoder that reads only codebooks 1..K "
                        "and speaks the corpus's voice (train it on one voice; 0: all)")
    p.add_argument("--semantic-layers", type=int, default=0, metavar="N",
                   help="give codebook 1 N causal transformer layers of its own over the "
                        "encoder's features (0: it reads the acoustic latent)")
    p.add_argument("--semantic-dim", type=int, default=0, metavar="W",
                   help="width of those layers (0: the encoder's; narrower makes a smaller codec)")
    p.add_argument("--semantic-ff-mult", type=int, default=4, metavar="M",
                   help="their MLP's hidden width as a multiple of --semantic-dim")
    p.add_argument("--semantic-only", action="store_true",
                   help="with --init and --semantic-layers: train only codebook 1's side on the "
                        "distillation loss; then a --decoder-only run from it learns its codes")
    p.add_argument("--max-items", type=int, default=0, help="use only the first N items (0: all)")
    loop_flags(p)
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "teacher", "codec teacher", commands.cmd_codec_teacher,
            "cache Whisper tiny.en encoder states for a corpus (resumable)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--threads", type=int, default=2)

    p = add(sub, "export", "codec export", commands.cmd_codec_export,
            "a run's weights as a small inference file (fp16, or int8 matrices)")
    p.add_argument("run", type=Path, help="run folder or model file")
    p.add_argument("output", type=Path)
    p.add_argument("--int8", action="store_true", help="int8 weight matrices with per-row scales")
    p.add_argument("--voice", action="store_true",
                   help="a voice decoder run (--decoder-codebooks K): only its decoding side, "
                        "loaded on the shipped codec's encoder (a small file; the dialogue "
                        "model speaks through voxlm/assets/voice.safetensors)")
    p.add_argument("--curve", type=Path, help="also plot the run's training curve to this PNG")

    for name, func, help in (("encode", commands.cmd_codec_encode, "audio file to codes (.npy int16 [K, T]; "
                              "with --pitch .npz)"),
                             ("decode", commands.cmd_codec_decode, "codes (.npy or .npz) to a wav file"),
                             ("roundtrip", commands.cmd_codec_roundtrip, "encode and decode an audio file")):
        p = add(sub, name, f"codec {name}", func, help)
        p.add_argument("input", type=Path)
        p.add_argument("output", type=Path)
        p.add_argument("--checkpoint", type=Path, help="model file or run folder (default: shipped)")
        if name != "decode":
            p.add_argument("--bitrate", type=float, help="kbps (default: the codec's highest)")
            p.add_argument("--pitch", action="store_true",
                           help="send the input's pitch beside the codes (0.35 kbps of the "
                                "bitrate; one frame, 80 ms, more latency): the harmonic "
                                "decoder's F0 is then the input's")
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
    p = add(sub, "corpus", "synth corpus", commands.cmd_synth_corpus, "multi-voice monologue corpus")
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

    p = add(sub, "dialogues", "synth dialogues", commands.cmd_synth_dialogues, "two-channel spoken dialogues")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--count", type=int, default=20, help="number of dialogues")
    p.add_argument("--assistant-voice", default="piper:joe", help="the assistant's one voice")
    p.add_argument("--qa-share", type=float, default=0.4,
                   help="fraction of dialogues that are spoken QA, 0..1 (the rest are chitchat)")
    p.add_argument("--qa-weights", type=_csv, default=("4", "1", "1", "2"), metavar="A,C,S,F",
                   help="relative odds of arithmetic, counting, spelling and fact questions")
    p.add_argument("--user-shift", type=float, default=0.0, metavar="SEMITONES",
                   help="shift each training user voice's pitch and formants by a random amount "
                        "up to this many semitones, per dialogue (held-out voices never): more "
                        "voices from the same engines (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "turns", "synth turns", commands.cmd_synth_turns,
            "one speaker's speech out of corpora as a monologue corpus (e.g. the assistant's "
            "turns of the dialogues, to train a voice decoder on)")
    p.add_argument("--data", required=True, type=Path, action="append",
                   help="dialogue or monologue corpus folder (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="corpus folder (resumes if it exists)")
    p.add_argument("--speaker", default="piper:joe",
                   help="ENGINE:NAME as in the manifests (the dialogues' assistant: piper:joe)")
    p.add_argument("--channel", type=int, default=1, choices=(0, 1),
                   help="the dialogues' channel it speaks in (0 user, 1 assistant)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add(sub, "answers", "synth answers", commands.cmd_synth_answers,
            "every answer of the spoken QA, one per line, as text (for `lm train --text`)")
    p.add_argument("--out", required=True, type=Path, help="text file to write")
    p.add_argument("--max-operand", type=int, default=12,
                   help="largest arithmetic operand (the dialogues' default: 12)")

    p = add(sub, "stats", "synth stats", commands.cmd_synth_stats,
            "turn-taking statistics of a dialogue folder beside real-conversation figures")
    p.add_argument("dir", type=Path)

    p = add(sub, "realset", "synth realset", commands.cmd_synth_realset, "real-speech eval set (Asterisk prompts)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--limit", type=int, default=None, help="at most this many prompts")

    add(sub, "voices", "synth voices", commands.cmd_synth_voices, "list every voice")

    p = add(sub, "say", "synth say", commands.cmd_synth_say, "speak one text to a wav file")
    p.add_argument("text")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--voice", default="espeak:en-us+m1", help="ENGINE:NAME (see `voxlm synth voices`)")
    p.add_argument("--rate", type=float, default=1.0, help="speaking-rate factor")
    p.add_argument("--words", type=Path, help="also write word timings to this JSON file")

    audio = top.add_parser("audio", help=f"inspect and convert audio files (e.g. `{EXAMPLES['audio info']}`)")
    sub = audio.add_subparsers(dest="audio_command", metavar="SUBCOMMAND", required=True)
    for name, func, help in (("info", commands.cmd_audio_info, "duration and level of an audio file"),
                             ("convert", commands.cmd_audio_convert, "any audio file to 16 kHz mono wav/flac")):
        p = add(sub, name, f"audio {name}", func, help)
        p.add_argument("input", type=Path)
        if name == "convert":
            p.add_argument("output", type=Path)
            p.add_argument("--normalize", action="store_true", help="loudness-normalise to -23 dBFS")
        p.add_argument("--max-seconds", type=float, default=3600.0, help="reject longer files")

    data = top.add_parser("data", help=f"import real speech corpora (e.g. `{EXAMPLES['data import']}`)")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = add(sub, "import", "data import", commands.cmd_data_import, "a LibriSpeech, LibriLight or "
            "Fisher tree as a voxlm corpus folder, word timings by DTW (resumable; layouts: "
            "voxlm/importers.py)")
    p.add_argument("--format", required=True, choices=IMPORT_FORMATS, help="the layout of --src")
    p.add_argument("--src", required=True, type=Path, help="the corpus as published (searched recursively)")
    p.add_argument("--out", required=True, type=Path, help="corpus folder (resumes if it exists)")
    p.add_argument("--limit", type=int, default=0, help="only the first N source audio files (0: all)")
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument("--no-align", action="store_true", help="no word timings (continuation only)")
    p.add_argument("--segment-seconds", type=float, default=30.0,
                   help="LibriLight: longest piece a chapter file is cut into, at pauses")
    p.add_argument("--audio-format", choices=("wav", "flac"), default="wav",
                   help="mono output files (flac: half the disk); Fisher is stereo wav")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_codec(top, add)
    _add_lm(top, add)
    _add_speech(top, add)
    _add_dialogue(top, add)
    _add_eval_and_units(top, add)

    p = add(top, "demo", "demo", commands.cmd_demo, "the main job: ask the dialogue model a few "
            "spoken questions in held-out voices; stereo wavs, transcripts and an HTML report")
    p.add_argument("--out", type=Path, default=Path("voxlm-demo"), help="output folder")
    p.add_argument("--checkpoint", type=Path, help="dialogue model: an LM run folder or model file "
                                                   "trained with --mode duplex (default: the shipped one)")
    p.add_argument("--questions", type=int, default=3,
                   help="spoken questions, one conversation each (two arithmetic, one chitchat, ...)")
    p.add_argument("--seed", type=int, default=0, help="picks the questions and seeds sampling")
    p.add_argument("--fp32", action="store_true", help="run the LM in fp32 (default: int8 "
                                                        "weights, as `voxlm serve` runs it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    from .errors import VoxlmError

    finished = False
    try:
        args.func(args)
        finished = True
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
    finally:
        leave_process_group(wait=finished)
    return 0


def leave_process_group(wait: bool = False):
    """Under torchrun: leave the process group before exit, so no rank's gloo threads are
    still running when the interpreter tears down (a rank then aborts at exit). wait: the
    command finished on this rank; meet the others first, so none tears the group down while
    another still uses it (a rank that failed never comes: torchrun stops the rest)."""
    dist = sys.modules.get("torch.distributed")  # only when a command imported it
    if dist is not None and dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
