# bash recipes/codec.sh   (trains the shipped default codec: about 2.5-3 hours on an idle 2-core CPU)
# On a GPU the same commands run there (bf16 autocast); with several: prefix the train line
# with `torchrun --nproc_per_node N -m` in place of `voxlm` and raise --batch-size.
set -euo pipefail
voxlm synth corpus --out data/corpus --minutes 120                  # 2063 items, ~11 min
voxlm codec teacher --data data/corpus                              # Whisper tiny.en states, ~3 min
# the first run also caches YIN pitch targets (data/corpus/pitch, ~2 min)
voxlm codec train --data data/corpus --out runs/codec_base --config base \
    --steps 7000 --batch-size 8 --adversarial-start 6000 --save-every 250   # resumes if killed
voxlm synth corpus --out data/heldout --minutes 4 --engines festival --augment 0
voxlm synth realset --out data/realset
voxlm eval codec --data data/heldout --data data/realset --report reports/codec \
    --checkpoint runs/codec_base --probe-data data/corpus
voxlm codec export runs/codec_base voxlm/assets/codec.safetensors --int8 \
    --curve docs/codec_training_curve.png
