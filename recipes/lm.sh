# bash recipes/lm.sh   (the default speech-text LM, TTS and ASR directions: about 1 hour of
# training on an idle 2-core CPU, after recipes/codec.sh has made the corpus and the codec)
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size;
# add --fsdp when the model's training state does not fit one GPU (FSDP2: weights, gradients
# and AdamW state sharded over the N processes; same checkpoints, resumable without it).
set -euo pipefail
# codec codes (the shipped codec) and a 1000-id sentencepiece trained on the corpus words
voxlm lm tokenize --data data/corpus --out data/tokens_sp1k --text-vocab 1000      # ~40 s
voxlm lm train --data data/tokens_sp1k --out runs/lm_aligned --mode aligned --config base \
    --steps 1500 --batch-size 8 --lr 8e-4 --warmup 100 --save-every 100             # resumes if killed
voxlm synth realset --out data/realset
voxlm eval lm --checkpoint runs/lm_aligned --data data/tokens_sp1k --real data/realset \
    --report reports/lm --limit 100 --speech-limit 40
