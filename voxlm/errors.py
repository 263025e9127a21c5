"""The one exception type users see: a one-line message naming the problem and the fix."""


class VoxlmError(Exception):
    """Bad input or a bad environment. The CLI prints `voxlm: error: <message>` and exits 2.

    Raise it with a message that says what is wrong, where, and what to do about it, either as
    one string or as (problem, fix):
    `raise VoxlmError(f"{path}: file is empty (0 bytes); pass a wav/flac/ogg/mp3 file with audio")`
    `raise VoxlmError(f"{path}: file is empty (0 bytes)", "pass a wav/flac/ogg/mp3 file with audio")`
    """

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(f"{problem}; {fix}" if fix else problem)
