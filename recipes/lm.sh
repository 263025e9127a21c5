# bash recipes/lm.sh   (the shipped speech-text LM, TTS and ASR directions over many voices: ~40 min of synthesis, ~2 min of tokenising, ~40 + ~65 min of training on an idle 2-core CPU, after recipes/codec.sh (the codec) and recipes/dialogue.sh (the text vocabulary))
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size;
# add --fsdp when the model's training state does not fit one GPU (FSDP2: weights, gradients
# and AdamW state sharded over the N processes; same checkpoints, resumable without it).
# Its text ids are the dialogue model's (one sentencepiece), so a dialogue model can start from
# it (`lm train --mode duplex --init runs/lm_speech2`: its speech tables read the user too).
set -euo pipefail
# 10 hours of monologues in 26 training voices (espeak, flite, piper, kokoro; pitch and rate
# varied per item); the voices of split valid and test are never trained on
voxlm synth corpus --out data/lm_corpus --minutes 240 --seed 0                    # resumable
voxlm synth corpus --out data/lm_corpus2 --minutes 360 --seed 1
for corpus in lm_corpus lm_corpus2; do
    voxlm lm tokenize --data data/$corpus --out data/${corpus}_tokens \
        --tokenizer data/dialogue_tokens/tokenizer.model --workers 2
done
# stage 1: the first 4 hours. The run was stopped at step 1500 of this 6000-step schedule,
# when its held-out loss had stopped falling (best: step 1200); kill it there (it resumes)
voxlm lm train --data data/lm_corpus_tokens --out runs/lm_speech --mode aligned --config small \
    --steps 6000 --batch-size 16 --lr 1e-3 --warmup 200 --semantic-weight 4 \
    --save-every 100 --log-every 10 --valid-every 200
# stage 2: all 10 hours, dropout against the overfitting stage 1 showed (training loss 4.4,
# held-out 7.8)
voxlm lm train --data data/lm_corpus_tokens --data data/lm_corpus2_tokens --out runs/lm_speech2 \
    --mode aligned --init runs/lm_speech/best.safetensors --dropout 0.1 --steps 2600 \
    --batch-size 16 --lr 6e-4 --warmup 100 --semantic-weight 4 --save-every 100 \
    --log-every 10 --valid-every 200
voxlm lm export runs/lm_speech2/best.safetensors voxlm/assets/lm.safetensors --int4 \
    --curve docs/lm_training_curve.png
voxlm synth realset --out data/realset
voxlm eval lm --checkpoint voxlm/assets/lm.safetensors --data data/lm_corpus2_tokens \
    --real data/realset --report reports/lm --limit 100 --speech-limit 30
python benchmarks/voice_conversion.py --checkpoint voxlm/assets/lm.safetensors \
    --data data/lm_corpus --pairs 20 --keep 1,2,4 --out reports/convert
