# bash recipes/dialogue.sh   (the shipped dialogue model: ~30 min of dialogue synthesis, ~2 min of tokenising, ~60 min of training on an idle 2-core CPU, with the shipped codec)
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size and
# --steps; more dialogues (--count) is what helps most.
set -euo pipefail
voxlm synth dialogues --out data/dialogues --count 1344 --seed 0          # 7.1 h, resumable
# codec codes of both channels (the shipped codec) and a 1000-id sentencepiece on the words
voxlm lm tokenize --data data/dialogues --out data/dialogue_tokens --text-vocab 1000
voxlm lm train --data data/dialogue_tokens --out runs/dialogue --mode duplex --config small \
    --steps 1100 --batch-size 8 --lr 1e-3 --warmup 100 --semantic-weight 4 \
    --save-every 100 --log-every 10 --valid-every 50     # resumes if killed; held-out loss
#   every 50 steps (valid_loss in metrics.jsonl), the best step's weights in runs/dialogue/best.safetensors
voxlm lm export runs/dialogue voxlm/assets/dialogue.safetensors --int8 \
    --curve docs/dialogue_training_curve.png
voxlm eval dialogue --checkpoint voxlm/assets/dialogue.safetensors --data data/dialogues \
    --report reports/dialogue
