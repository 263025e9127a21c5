# bash recipes/codec.sh   (trains the shipped default codec: about 4 hours on an idle 2-core CPU)
# On a GPU the same commands run there (bf16 autocast); with several: prefix the train lines
# with `torchrun --nproc_per_node N -m` in place of `voxlm` and raise --batch-size.
set -euo pipefail
voxlm synth corpus --out data/corpus --minutes 120                  # 2063 items, ~11 min
voxlm codec teacher --data data/corpus                              # Whisper tiny.en states, ~3 min
# stage 1: reconstruction losses. The first run also caches YIN pitch targets (data/corpus/pitch,
# ~2 min). The shipped codec's stage 1 ended at step 3750 of this 7000-step schedule
voxlm codec train --data data/corpus --out runs/codec_base --config base \
    --steps 7000 --stop-at 3750 --batch-size 8 --adversarial-start 6000 --save-every 250
# stage 2: the encoder learns to carry F0, on the corpus grown to 4 hours (the same seed: the
# first 2 hours are the same items; recipes/lm.sh trains on it too). F0 loss weight 5 -> 25;
# half of each batch resampled by up to 7 semitones either way (voices outside the corpus's
# pitch range); discriminators for the last 2000 steps (0.45 s per step, then 1.0 s: ~1 h 25 min)
voxlm synth corpus --out data/corpus --minutes 240                  # 4040 items, ~11 min more
voxlm codec train --data data/corpus --out runs/codec_f0 --config base \
    --init runs/codec_base/model.safetensors --pitch-weight 25 --pitch-shift 7 --lr 5e-4 \
    --steps 7000 --adversarial-start 5000 --batch-size 8 --save-every 250 --seed 3
voxlm synth corpus --out data/heldout --minutes 4 --engines festival --augment 0
voxlm synth realset --out data/realset
voxlm codec teacher --data data/corpus    # held-out items too: the probe reads every item
voxlm codec export runs/codec_f0 runs/codec_f0_int8.safetensors --int8  # the codec shipped before this one
# stage 3: semantic layers for codebook 1 (4 causal transformer layers 256 wide, SwiGLU 512,
# over the encoder's 12.5 Hz features), trained alone on the distillation loss; every other
# part frozen, codebooks 2..12 keep their codes (13 minutes, 5 steps per second)
S="--semantic-layers 4 --semantic-dim 256 --semantic-ff-mult 2"
voxlm codec train --data data/corpus --out runs/codec_sem256 --config base \
    --init runs/codec_f0_int8.safetensors $S --semantic-only --batch-size 16 --segment-frames 40 \
    --pitch-shift 7 --steps 4000 --lr 1e-3 --seed 5
# stage 4: the decoder learns the new codebook 1 (codes kept; 28 minutes, last 1000 adversarial)
voxlm codec train --data data/corpus --out runs/codec_sem256_dec --config base \
    --init runs/codec_sem256 $S --decoder-only --pitch-weight 25 --pitch-shift 7 --lr 5e-4 \
    --steps 3000 --adversarial-start 2000 --batch-size 8 --seed 6
# stage 5: everything trained together, all codes free to move (33 minutes)
voxlm codec train --data data/corpus --out runs/codec_sem256_joint --config base \
    --init runs/codec_sem256_dec $S --pitch-weight 25 --pitch-shift 7 --lr 3e-4 --steps 2500 \
    --adversarial-start 1000 --batch-size 8 --seed 7
voxlm codec export runs/codec_sem256_joint voxlm/assets/codec.safetensors --int8 \
    --curve docs/codec_training_curve.png
voxlm eval codec --data data/heldout --data data/realset --report reports/codec \
    --checkpoint voxlm/assets/codec.safetensors --probe-data data/corpus --pitch-bitrates 1.35 1.5
#   (--pitch-bitrates: also with the input's pitch sent beside the codes, `codec roundtrip --pitch`)
python benchmarks/codec_pitch.py --data data/heldout --data data/realset \
    --checkpoint voxlm/assets/codec.safetensors
