# bash recipes/small.sh   (one GPU: 20 h of synthetic speech and 4000 dialogues, the base codec, a speech-text LM and a dialogue model warm-started from Gemma 3 270M; prints the training throughput it measured)
# Not yet run: the machine these recipes were written on has no GPU, so there is no measured
# figure here; the last lines print this run's own (codec: seconds of audio per second; LM:
# tokens per second, median of the logged steps). Before: the CUDA build of torch 2.13.0
# (README, "GPU users"). Mixed precision needs no flag: the trainer autocasts to bf16 on a GPU
# (voxlm/train.py, uses_bf16); with FSDP the gathered weights are bf16 and gradients reduced in
# fp32. Synthesis, teacher states and tokenising run on the CPU: WORKERS (default: all cores).
# Every line resumes if killed. Set RUN/DATA to keep it apart from the tiny recipe's folders.
set -euo pipefail
W=${WORKERS:-$(nproc)}
DATA=${DATA:-data/small}
RUN=${RUN:-runs/small}

# data: 10x the tiny recipe's speech, 3x its dialogues (the same engines and voices)
voxlm synth corpus --out $DATA/corpus --minutes 1200 --workers $W
voxlm synth dialogues --out $DATA/dialogues --count 4000 --workers $W
voxlm synth corpus --out $DATA/heldout --minutes 4 --engines festival --augment 0
voxlm synth realset --out data/realset

# codec: base config, batch 8x the tiny recipe's (the codec has no FSDP: 5.6 M parameters fit anywhere)
voxlm codec teacher --data $DATA/corpus --threads $W
voxlm codec train --data $DATA/corpus --out $RUN/codec --config base --steps 20000 \
    --batch-size 64 --adversarial-start 16000 --save-every 1000 --log-every 50
voxlm eval codec --data $DATA/heldout --data data/realset --report $RUN/reports/codec \
    --checkpoint $RUN/codec --probe-data $DATA/corpus

# LM: Gemma 3's tokenizer cut to the corpus's words (--trim), temporal transformer from the
# Gemma 3 270M GGUF, the base config's depth transformer and streams
voxlm lm tokenize --data $DATA/corpus --out $DATA/tokens_trim --codec $RUN/codec --trim --workers $W
voxlm lm train --data $DATA/tokens_trim --out $RUN/lm --mode aligned --config base \
    --warm-start gguf --steps 20000 --batch-size 64 --lr 3e-4 --warmup 500 --save-every 1000 --log-every 50
voxlm eval lm --checkpoint $RUN/lm --data $DATA/tokens_trim --real data/realset --report $RUN/reports/lm

# dialogue model: duplex on the dialogues, the same warm start
voxlm lm tokenize --data $DATA/dialogues --out $DATA/dialogue_tokens_trim --codec $RUN/codec --trim --workers $W
voxlm lm train --data $DATA/dialogue_tokens_trim --out $RUN/dialogue --mode duplex --config base \
    --warm-start gguf --steps 20000 --batch-size 64 --lr 3e-4 --warmup 500 --semantic-weight 4 \
    --save-every 1000 --log-every 50
voxlm eval dialogue --checkpoint $RUN/dialogue --data $DATA/dialogues --report $RUN/reports/dialogue

# throughput measured by this run (rows of metrics.jsonl: seconds_per_step, tokens_per_s)
python - "$RUN" <<'EOF'
import json, statistics, sys
from pathlib import Path

run = Path(sys.argv[1])
def rows(name):
    return [json.loads(line) for line in (run / name / "metrics.jsonl").open()][1:]  # not step 1
codec = statistics.median(r["seconds_per_step"] for r in rows("codec"))
print(f"codec: {64 * 24 * 0.08 / codec:.0f} s of audio per s (batch 64 x 24 frames of 80 ms)")
for name in ("lm", "dialogue"):
    print(f"{name}: {statistics.median(r['tokens_per_s'] for r in rows(name)):.0f} tokens per s")
EOF
