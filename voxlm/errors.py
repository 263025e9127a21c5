"""The one exception type users see: a one-line message naming the problem and the fix."""


class VoxlmError(Exception):
    """Bad input or a bad environment. The CLI prints `voxlm: error: <message>` and exits 2.

    Raise it with a message that says what is wrong, where, and what to do about it:
    `raise VoxlmError(f"{path}: file is empty (0 bytes); pass a wav/flac/ogg/mp3 file with audio")`
    """
