"""Synthetic speech world: TTS engines, monologue corpora and two-channel dialogues."""
