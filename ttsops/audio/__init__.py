"""Audio: wav I/O, resampling, the one mel definition, and vocoders."""

from ttsops.audio.io import load_audio, save_wav
from ttsops.audio.mel import MelConfig, MelExtractor
from ttsops.audio.vocoder import GriffinLim, Vocoder

__all__ = ["GriffinLim", "MelConfig", "MelExtractor", "Vocoder", "load_audio", "save_wav"]
