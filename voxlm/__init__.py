"""voxlm: speech codec, speech-text language model and full-duplex dialogue, trained from nothing."""

__version__ = "0.1.0"
