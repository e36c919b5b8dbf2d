"""English phonemes (IPA) through espeak-ng, the way Piper and Coqui read words they never heard.

``Phonemizer`` turns cleaned English into espeak-ng's en-us IPA (``the teacher`` -> ``ðə tˈiːtʃɚ``)
and keeps the punctuation that shapes prosody (``, . ! ? ; :``) between the phonemised chunks.
espeak-ng is a Debian package (``apt-get install espeak-ng``); it runs offline, about 10 ms a call.
One call phonemises all the chunks of a batch of texts (one clause per line), and each instance
remembers what it phonemised.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ttsops.errors import ConfigError, DataError

VOICE = "en-us"
PUNCTUATION = ",.!?;:"
_CHUNKS = re.compile(rf"([{re.escape(PUNCTUATION)}])")
# espeak-ng's en-us IPA output (every symbol seen on the benchmark sentences, the demo corpus and the
# held-out lists) plus the IPA it may produce for rarer words; anything else is dropped
IPA_SYMBOLS = ("abdefhijklmnopstuvwxzæçðøŋœɐɑɒɔɕəɘɚɛɜɝɞɟɡɣɤɥɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʈʉʊʋʌʍʎʏʐʑʒʔʕʝʰʲ"
               "ʷˈˌːˑ\u0329\u0303θχᵻ")


def _espeak(lines: Sequence[str]) -> list[str]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("text_frontend=phonemes needs espeak-ng (apt-get install espeak-ng)")
    # one clause per input line: the full stop makes espeak-ng end the clause there
    proc = subprocess.run([exe, "-q", "--ipa", "-v", VOICE], input="".join(f"{x}.\n" for x in lines),
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise DataError(f"espeak-ng failed: {proc.stderr.strip()[:200]}")
    return [" ".join(line.split()) for line in proc.stdout.splitlines() if line.strip()]


@functools.cache
def _espeak_version() -> str:
    """Part of the memo's key: another espeak-ng may phonemise differently."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return "missing"
    return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


class Phonemizer:
    """Cleaned English -> IPA with punctuation kept; memoises every chunk it has phonemised, and with
    ``memo_file`` keeps the memo on disk between processes (a tuner restarts train.py often)."""

    def __init__(self, memo_file: Path | None = None) -> None:
        self._memo: dict[str, str] = {}
        self.memo_file = memo_file
        if memo_file is not None and memo_file.is_file():
            try:
                saved = json.loads(memo_file.read_text(encoding="utf-8"))
                if saved.get("espeak") == _espeak_version():
                    self._memo.update(saved["chunks"])
            except (OSError, ValueError, KeyError, AttributeError):
                pass  # a damaged memo is rebuilt

    def _chunks(self, chunks: set[str]) -> None:
        todo = sorted(c for c in chunks if c not in self._memo)
        if not todo:
            return
        out = _espeak(todo)
        if len(out) != len(todo):  # espeak-ng split a clause of its own accord: one call per chunk
            out = [" ".join(_espeak([c])) for c in todo]
        self._memo.update(zip(todo, out, strict=True))
        if self.memo_file is not None:
            from ttsops.infra.atomic import atomic_write_json

            atomic_write_json(self.memo_file, {"espeak": _espeak_version(), "chunks": self._memo}, indent=None,
                              ensure_ascii=False)

    def __call__(self, texts: Sequence[str]) -> list[str]:
        split = [[c.strip() for c in _CHUNKS.split(t) if c.strip()] for t in texts]
        self._chunks({c for parts in split for c in parts if c not in PUNCTUATION})
        result = []
        for parts in split:
            text = ""
            for c in parts:
                text += c if c in PUNCTUATION else (" " if text else "") + self._memo[c]
            result.append(text)
        return result
