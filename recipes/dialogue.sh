# bash recipes/dialogue.sh   (the shipped dialogue model: ~105 min of dialogue synthesis, ~11 min of tokenising, ~37 + ~37 + ~30 + ~33 min of training and ~40 min for the voice decoder on an idle 2-core CPU, after recipes/codec.sh)
# On GPUs: `torchrun --nproc_per_node N -m voxlm lm train ...` with a larger --batch-size and
# --steps; more dialogues (--count) is what helps most.
set -euo pipefail
# bf16 autocast where the CPU has AVX-512 BF16 (2.1x the fp32 step of the dialogue model's
# shape there; 16x slower without it: docs/BENCHMARKS.md, "Training throughput")
BF16=--bf16
grep -qw avx512_bf16 /proc/cpuinfo || BF16=""
voxlm synth dialogues --out data/dialogues --count 1344 --seed 0          # 7.1 h, resumable
# stages 1 and 2 run on the codes of the codec shipped before the semantic one (recipes/codec.sh
# exports it); stage 3 moves the model to the shipped codec's codes
OLD_CODEC=runs/codec_f0_int8.safetensors
# codec codes of both channels and a 1000-id sentencepiece on the words
voxlm lm tokenize --data data/dialogues --out data/dialogue_tokens --text-vocab 1000 --codec $OLD_CODEC
voxlm lm train --data data/dialogue_tokens --out runs/dialogue --mode duplex --config small $BF16 \
    --steps 1100 --stop-at 600 --batch-size 8 --lr 1e-3 --warmup 100 --semantic-weight 4 \
    --save-every 100 --log-every 10 --valid-every 50     # resumes if killed; held-out loss
#   every 50 steps (valid_loss in metrics.jsonl), the best step's weights in runs/dialogue/best.safetensors:
#   the shipped run's was step 500 (the text stream overfits after; that run went on to 1010)
# stage 2: spoken QA. 2400 more dialogues, all QA, two thirds of the questions arithmetic, then
# fine-tune the stage-1 model on them and the stage-1 dialogues (QA first: its valid split is
# the held-out loss that picks the best step)
voxlm synth dialogues --out data/qa --count 2400 --seed 1 --qa-share 1 --qa-weights 6,1,1,1
voxlm lm tokenize --data data/qa --out data/qa_tokens --tokenizer data/dialogue_tokens/tokenizer.model \
    --codec $OLD_CODEC
voxlm lm train --data data/qa_tokens --data data/dialogue_tokens --out runs/dialogue_qa $BF16 \
    --mode duplex --init runs/dialogue/best.safetensors --steps 2000 --stop-at 800 --batch-size 8 \
    --lr 6e-4 --warmup 60 --semantic-weight 4 --save-every 100 --log-every 10 --valid-every 100
#   held-out loss was lowest at step 700 and rose after (the shipped run went on to step 814);
#   its best step is exported (the dialogue model shipped before this one)
voxlm lm export runs/dialogue_qa/best.safetensors runs/dialogue_f0_int4.safetensors --int4
# stage 3: the QA dialogues on the shipped (semantic) codec's codes. The model reads only the
# user's codebook 1 (--user-codebooks 1: what was said, not the voice), and a listen head writes
# the user's words (--listen-weight 3). Tokenised first with the fp32 codec run, then (stage 3b)
# with its int8 export, the file that ships, for a short pass on the codes it will hear
voxlm lm tokenize --data data/qa --out data/qa_joint_tokens --codec runs/codec_sem256_joint \
    --tokenizer data/dialogue_tokens/tokenizer.model
voxlm lm train --data data/qa_joint_tokens --mode duplex --init runs/dialogue_f0_int4.safetensors \
    --init-other-codec --user-codebooks 1 --listen-weight 3 --steps 1200 --batch-size 8 --lr 3e-4 \
    --warmup 50 --semantic-weight 4 --valid-every 200 $BF16 --out runs/ft_joint_u1
#   held-out loss 3.42, 3.12, 3.01, 2.97, 2.96 (step 1000, the best), 2.96
voxlm lm tokenize --data data/qa --out data/qa_j8_tokens --codec voxlm/assets/codec.safetensors \
    --tokenizer data/dialogue_tokens/tokenizer.model
voxlm lm train --data data/qa_j8_tokens --mode duplex --init runs/ft_joint_u1/best.safetensors \
    --init-other-codec --user-codebooks 1 --listen-weight 3 --steps 300 --batch-size 8 --lr 1e-4 \
    --warmup 20 --semantic-weight 4 --valid-every 100 $BF16 --out runs/ft_j8
# stage 4: more of the same. 4000 more QA dialogues (11.7 h; 50 min of synthesis on 2 workers,
# 3 min of tokenising): on twice the dialogues the model learns to hear the numbers in new
# voices instead of memorising its corpus (docs/BENCHMARKS.md "More QA dialogues"; ~35 min)
voxlm synth dialogues --out data/qa2 --count 4000 --seed 21 --qa-share 1 --qa-weights 6,1,1,1
voxlm lm tokenize --data data/qa2 --out data/qa2_j8_tokens --codec voxlm/assets/codec.safetensors \
    --tokenizer data/dialogue_tokens/tokenizer.model
voxlm lm train --data data/qa_j8_tokens --data data/qa2_j8_tokens --mode duplex \
    --init runs/ft_j8/best.safetensors --user-codebooks 1 --listen-weight 3 --steps 1200 \
    --batch-size 8 --lr 2e-4 --warmup 50 --semantic-weight 4 --dropout 0.1 --valid-every 200 \
    $BF16 --out runs/ft_qa2
#   held-out loss 2.92, 2.84, 2.79, 2.76, 2.73, 2.72 (step 1200, the best)
# the assistant's voice decoder: it reads codebook 1 alone and speaks it in piper joe's voice,
# the assistant's in every dialogue, so the acoustic codebooks the model generates cannot cost
# its words (docs/BENCHMARKS.md "A voice decoder for the assistant"; ~40 min on one thread).
# The assistant's turns of the QA dialogues and the corpus's joe utterances: 3.2 h to train on
S="--semantic-layers 4 --semantic-dim 256 --semantic-ff-mult 2"
voxlm synth turns --data data/qa --data data/corpus --speaker piper:joe --out data/assistant_voice
voxlm codec train --data data/assistant_voice --out runs/voice_dec --config base \
    --init voxlm/assets/codec.safetensors $S --decoder-only --decoder-codebooks 1 \
    --pitch-weight 25 --lr 5e-4 --steps 3000 --stop-at 2000 --adversarial-start 2000 \
    --batch-size 16 --seed 11
voxlm codec export runs/voice_dec voxlm/assets/voice.safetensors --int8 --voice
# int4, but the audio embedding tables int8: int4 there delays its replies (0.7-0.8 s median
# against 0.33 s; docs/BENCHMARKS.md "Dialogue model on the semantic codec's codes")
voxlm lm export runs/ft_qa2/best.safetensors voxlm/assets/dialogue.safetensors --int4 \
    --keep-int8 audio_emb --curve docs/dialogue_training_curve.png
voxlm eval dialogue --checkpoint voxlm/assets/dialogue.safetensors --data data/dialogues \
    --report reports/dialogue
voxlm eval dialogue --checkpoint voxlm/assets/dialogue.safetensors --data data/qa --limit 40 \
    --seeds 3 --report reports/dialogue_qa
python benchmarks/dialogue_hearing.py --tokens data/qa_j8_tokens --data data/qa \
    --checkpoint voxlm/assets/dialogue.safetensors --limit 200 --out reports/dialogue_hearing
