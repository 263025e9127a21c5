# bash recipes/lm_warmstart.sh   (TWIST on a small run: Gemma 3 270M weights against the same
# shape with fresh weights, equal steps, data and settings; about 40 minutes on an idle 2-core CPU)
set -euo pipefail
# Gemma 3's tokenizer cut to the pieces the corpus uses (5805 ids instead of 262144)
voxlm lm tokenize --data data/corpus --out data/tokens_trim --trim
for init in warm random; do
    flags="--warm-start gguf"
    [ "$init" = random ] && flags="$flags --shape-only"
    voxlm lm train --data data/tokens_trim --out runs/lm_$init --mode interleave --config base \
        $flags --steps 150 --batch-size 8 --lr 3e-4 --warmup 15 --save-every 50 --threads 1
    voxlm eval lm --checkpoint runs/lm_$init --data data/tokens_trim --report reports/lm_$init \
        --no-speech --limit 100
done
