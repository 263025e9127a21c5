# bash recipes/lm.sh   (the shipped speech-text LM, TTS and ASR directions over many voices: ~25 min of synthesis, ~2 min of tokenising, ~50 + ~75 + ~25 min of training on an idle 2-core CPU, after recipes/codec.sh (the codec and the first 4 hours) and recipes/dialogue.sh (the text vocabulary))
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size;
# add --fsdp when the model's training state does not fit one GPU (FSDP2: weights, gradients
# and AdamW state sharded over the N processes; same checkpoints, resumable without it).
# Its text ids are the dialogue model's (one sentencepiece), so a dialogue model can start from
# it (`lm train --mode duplex --init runs/lm_speech2`: its speech tables read the user too).
set -euo pipefail
# bf16 autocast where the CPU has AVX-512 BF16 (2.1x the fp32 step of the dialogue model's
# shape there; 16x slower without it: docs/BENCHMARKS.md, "Training throughput")
BF16=--bf16
grep -qw avx512_bf16 /proc/cpuinfo || BF16=""
# 10 hours of monologues in 26 training voices (espeak, flite, piper, kokoro; pitch and rate
# varied per item); the voices of split valid and test are never trained on
voxlm synth corpus --out data/corpus --minutes 240 --seed 0     # recipes/codec.sh made it
voxlm synth corpus --out data/corpus2 --minutes 360 --seed 1                      # resumable
# stages 1 and 2 run on the codes of the codec shipped before the semantic one (recipes/codec.sh
# exports it); stage 3 moves the model to the shipped codec's codes
for corpus in corpus corpus2; do
    voxlm lm tokenize --data data/$corpus --out data/${corpus}_tokens \
        --tokenizer data/dialogue_tokens/tokenizer.model --workers 2 \
        --codec runs/codec_f0_int8.safetensors
done
# stage 1: the first 4 hours, ended at step 1200 of a 6000-step schedule, where its held-out
# loss stopped falling (7.73, 7.75, 7.70 at steps 800, 1000, 1200)
voxlm lm train --data data/corpus_tokens --out runs/lm_speech --mode aligned --config small $BF16 \
    --steps 6000 --stop-at 1200 --batch-size 16 --lr 1e-3 --warmup 200 --semantic-weight 4 \
    --save-every 100 --log-every 10 --valid-every 200
# stage 2: all 10 hours, dropout against the overfitting stage 1 showed (training batches down to 4.5,
# held-out 7.7)
voxlm lm train --data data/corpus_tokens --data data/corpus2_tokens --out runs/lm_speech2 $BF16 \
    --mode aligned --init runs/lm_speech/best.safetensors --dropout 0.1 --steps 2600 --stop-at 2000 \
    --batch-size 16 --lr 6e-4 --warmup 100 --semantic-weight 4 --save-every 100 \
    --log-every 10 --valid-every 200
voxlm lm export runs/lm_speech2/best.safetensors runs/lm_f0_int4.safetensors --int4
# stage 3: the first 4 hours on the shipped codec's codes (its int8 file, the one that ships),
# from stage 2's int4 export: the text side is kept, the audio tables relearn the new codes
voxlm lm tokenize --data data/corpus --out data/corpus_j8_tokens --workers 2 \
    --tokenizer data/dialogue_tokens/tokenizer.model --codec voxlm/assets/codec.safetensors
voxlm lm train --data data/corpus_j8_tokens --out runs/lm_joint --mode aligned $BF16 \
    --init runs/lm_f0_int4.safetensors --init-other-codec --dropout 0.1 --steps 1000 \
    --batch-size 16 --lr 6e-4 --warmup 50 --semantic-weight 4 --save-every 100 --valid-every 100
voxlm lm export runs/lm_joint/best.safetensors voxlm/assets/lm.safetensors --int4 \
    --curve docs/lm_training_curve.png
voxlm synth realset --out data/realset
voxlm eval lm --checkpoint voxlm/assets/lm.safetensors --data data/corpus_j8_tokens \
    --real data/realset --report reports/lm --limit 100 --speech-limit 30
python benchmarks/voice_conversion.py --checkpoint voxlm/assets/lm.safetensors \
    --data data/corpus --pairs 20 --keep 1,2,4 --out reports/convert
