# bash recipes/large.sh import|prepare|codec|tokenize|lm|dialogue   (multi-node: real corpora, the codec with DDP, the LM and dialogue model with FSDP2; each stage submits a Slurm job, or prints the plain torchrun line to run on every node)
# Not run at this size: its data path was tested at tiny size with 2 CPU processes
# (tests/test_importers.py: import -> tokenize -> torchrun --nproc_per_node 2 lm train --fsdp).
#
# Your corpora, as published (point the variables below at them; --src is searched recursively):
#   LibriSpeech (openslr.org/12)  $LIBRISPEECH/{train-clean-100,train-clean-360,train-other-500,
#       dev-clean,...}/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac + SPEAKER-CHAPTER.trans.txt;
#       splits from the subset names (train-* train, dev-* valid, test-* test); word timings by
#       DTW against eSpeak NG (about 0.1 s; voxlm/importers.py says how it was measured)
#   LibriLight (libri-light)      $LIBRILIGHT/{small,medium,large}/SPEAKER/BOOK/NAME.flac (+ NAME.json
#       with "voice_activity"); no transcripts: continuation data; chapters cut at pauses into
#       pieces of at most --segment-seconds; ~1% of speakers valid, ~1% test
#   Fisher English (LDC2004S13/T19, LDC2005S13/T19)  $FISHER/.../NNN/fe_03_NNNNN.sph (2 channels,
#       8 kHz mu-law; shorten-compressed ones: `sph2pipe -f wav` them first) and the transcripts
#       .../NNN/fe_03_NNNNN.txt ("START END A: words") anywhere under $FISHER; written as stereo
#       dialogues (channel 0 = A, 1 = B, one turn per segment, words aligned inside it)
# Each import is an ordinary voxlm corpus folder (manifest.jsonl + 16 kHz audio), resumable.
#
# What trains on what:
#   codec     LibriSpeech train-* (mono, 16 kHz): DDP. The codec has no FSDP and needs none
#             (5.6 M parameters); its loader keeps every training item in memory in every
#             process (int16: 115 MB per hour), so it trains on the first CODEC_ITEMS train items
#   lm        all three, --mode interleave: LibriSpeech and Fisher (both channels) interleave
#             text and speech at word boundaries, LibriLight (no words) is speech only;
#             FSDP2 (--fsdp), temporal transformer warm-started from Gemma 3 270M, Gemma's whole
#             tokenizer (one tokenizer for the three tokens folders, as --data A --data B needs)
#   dialogue  Fisher, --mode duplex (channel 1 the model, channel 0 the user), FSDP2
# bf16 is automatic on GPUs. Checkpoints are one file per run and resume exactly, so a
# requeued job (--requeue) goes on where it stopped.
set -euo pipefail
LIBRISPEECH=${LIBRISPEECH:-/corpora/LibriSpeech}
LIBRILIGHT=${LIBRILIGHT:-/corpora/librilight}
FISHER=${FISHER:-/corpora/fisher}
DATA=${DATA:-data/large}
RUN=${RUN:-runs/large}
NODES=${NODES:-4}            # nodes per training job
GPUS=${GPUS:-8}              # GPUs (processes) per node
CPUS=${CPUS:-64}             # CPU cores per node of a training job
W=${WORKERS:-$(nproc)}       # CPU processes for the data stages
CODEC_ITEMS=${CODEC_ITEMS:-20000}   # ~70 h of LibriSpeech: ~8 GB of audio in each process
PORT=${PORT:-29500}

# launch JOB_NAME ARGS...: `voxlm ARGS` on NODES x GPUS processes
launch() {
    local name=$1; shift
    if command -v sbatch > /dev/null; then
        mkdir -p $RUN
        sbatch --parsable <<EOF
#!/bin/bash
#SBATCH --job-name=voxlm-$name
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --cpus-per-task=$CPUS
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=$RUN/slurm-$name-%j.log
head=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes \$SLURM_NNODES --nproc_per_node $GPUS --rdzv_id \$SLURM_JOB_ID \\
    --rdzv_backend c10d --rdzv_endpoint \$head:$PORT -m voxlm $*
EOF
    else
        echo "no sbatch here: run this on each of the $NODES nodes (HOST: the first node's address):"
        echo "torchrun --nnodes $NODES --nproc_per_node $GPUS --rdzv_id voxlm-$name" \
             "--rdzv_backend c10d --rdzv_endpoint HOST:$PORT -m voxlm $*"
    fi
}

case "${1:-}" in
import)  # CPU, one machine; each resumes
    voxlm data import --format librispeech --src $LIBRISPEECH --out $DATA/librispeech --workers $W
    voxlm data import --format librilight --src $LIBRILIGHT --out $DATA/librilight --workers $W \
        --audio-format flac --segment-seconds 30      # flac: LibriLight large is 51k hours
    voxlm data import --format fisher --src $FISHER --out $DATA/fisher --workers $W
    voxlm synth realset --out data/realset ;;
prepare)  # CPU: the codec's teacher states and pitch targets, once, before the DDP job
    python - $DATA/librispeech $CODEC_ITEMS $W <<'EOF'
import sys
from voxlm.codec.teacher import cache_teacher_features
from voxlm.data import read_manifest
from voxlm.pitch import cache_pitch

corpus, items, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [r for r in read_manifest(corpus) if r["split"] == "train"][:items]  # = --max-items
cache_teacher_features(corpus, rows, threads=threads)
cache_pitch(corpus, rows)
EOF
    ;;
codec)  # DDP
    launch codec codec train --data $DATA/librispeech --out $RUN/codec --config base \
        --max-items $CODEC_ITEMS --steps 50000 --batch-size $(( 16 * NODES * GPUS )) \
        --adversarial-start 40000 --save-every 1000 --log-every 50 ;;
tokenize)  # CPU (or one GPU each); the same codec and tokenizer (Gemma 3's) for all three
    for corpus in librispeech librilight fisher; do
        voxlm lm tokenize --data $DATA/$corpus --out $DATA/tokens/$corpus --codec $RUN/codec --workers $W
    done ;;
lm)  # FSDP2
    launch lm lm train --data $DATA/tokens/librilight --data $DATA/tokens/librispeech \
        --data $DATA/tokens/fisher --out $RUN/lm --mode interleave --config base \
        --warm-start gguf --fsdp --steps 100000 --batch-size $(( 8 * NODES * GPUS )) \
        --lr 3e-4 --warmup 2000 --save-every 1000 --log-every 50 ;;
dialogue)  # FSDP2
    launch dialogue lm train --data $DATA/tokens/fisher --out $RUN/dialogue --mode duplex \
        --config base --warm-start gguf --fsdp --steps 30000 --batch-size $(( 8 * NODES * GPUS )) \
        --lr 3e-4 --warmup 1000 --semantic-weight 4 --save-every 1000 --log-every 50 ;;
*)
    sed -n '1,/^set -euo/p' "$0" | head -n -1; exit 2 ;;
esac
# afterwards: voxlm eval lm --checkpoint $RUN/lm --data $DATA/tokens/librispeech --real data/realset
# (validation loss on the valid/test splits, zero-shot pairs, TTS/ASR); voxlm synth stats
# $DATA/fisher gives real conversation's turn-taking, the reference for the dialogue model's
