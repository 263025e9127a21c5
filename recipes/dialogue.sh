# bash recipes/dialogue.sh   (the shipped dialogue model: ~55 min of dialogue synthesis, ~4 min of tokenising, ~37 + ~37 min of training on an idle 2-core CPU, with the shipped codec)
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size and
# --steps; more dialogues (--count) is what helps most.
set -euo pipefail
# bf16 autocast where the CPU has AVX-512 BF16 (2.1x the fp32 step of the dialogue model's
# shape there; 16x slower without it: docs/BENCHMARKS.md, "Training throughput")
BF16=--bf16
grep -qw avx512_bf16 /proc/cpuinfo || BF16=""
voxlm synth dialogues --out data/dialogues --count 1344 --seed 0          # 7.1 h, resumable
# codec codes of both channels (the shipped codec) and a 1000-id sentencepiece on the words
voxlm lm tokenize --data data/dialogues --out data/dialogue_tokens --text-vocab 1000
voxlm lm train --data data/dialogue_tokens --out runs/dialogue --mode duplex --config small $BF16 \
    --steps 1100 --stop-at 600 --batch-size 8 --lr 1e-3 --warmup 100 --semantic-weight 4 \
    --save-every 100 --log-every 10 --valid-every 50     # resumes if killed; held-out loss
#   every 50 steps (valid_loss in metrics.jsonl), the best step's weights in runs/dialogue/best.safetensors:
#   the shipped run's was step 500 (the text stream overfits after; that run went on to 1010)
# stage 2: spoken QA. 2400 more dialogues, all QA, two thirds of the questions arithmetic, then
# fine-tune the stage-1 model on them and the stage-1 dialogues (QA first: its valid split is
# the held-out loss that picks the best step)
voxlm synth dialogues --out data/qa --count 2400 --seed 1 --qa-share 1 --qa-weights 6,1,1,1
voxlm lm tokenize --data data/qa --out data/qa_tokens --tokenizer data/dialogue_tokens/tokenizer.model
voxlm lm train --data data/qa_tokens --data data/dialogue_tokens --out runs/dialogue_qa $BF16 \
    --mode duplex --init runs/dialogue/best.safetensors --steps 2000 --stop-at 800 --batch-size 8 \
    --lr 6e-4 --warmup 60 --semantic-weight 4 --save-every 100 --log-every 10 --valid-every 100
#   held-out loss was lowest at step 700 and rose after (the shipped run went on to step 814);
#   its best step is exported
voxlm lm export runs/dialogue_qa/best.safetensors voxlm/assets/dialogue.safetensors --int4 \
    --curve docs/dialogue_training_curve.png
voxlm eval dialogue --checkpoint voxlm/assets/dialogue.safetensors --data data/dialogues \
    --report reports/dialogue
voxlm eval dialogue --checkpoint voxlm/assets/dialogue.safetensors --data data/qa --limit 40 \
    --report reports/dialogue_qa
