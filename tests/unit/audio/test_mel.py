import numpy as np
import pytest
import torch

from ttsops.audio import GriffinLim, MelConfig, MelExtractor, load_audio, save_wav
from ttsops.errors import DataError


def test_mel_matches_librosa() -> None:
    import librosa

    x = np.random.RandomState(0).randn(22050).astype(np.float32) * 0.1
    ours = MelExtractor(MelConfig())(x).numpy()
    ref = librosa.feature.melspectrogram(y=x, sr=22050, n_fft=1024, hop_length=256, win_length=1024,
                                         n_mels=80, fmin=0, fmax=8000, power=1.0, pad_mode="reflect")
    assert ours.shape == (80, 87)
    np.testing.assert_allclose(ours, np.log(np.clip(ref, 1e-5, None)), atol=1e-4)


def test_fmax_none_means_nyquist() -> None:
    m = MelExtractor(MelConfig(fmax=None))
    assert m.basis.shape == (80, 513)
    assert m.basis[:, -5:].sum() > 0  # bands reach the top of the spectrum


def test_griffin_lim_round_trip_keeps_the_spectrum() -> None:
    sr = 22050
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    mel = MelExtractor(MelConfig())(x)
    y = GriffinLim(MelConfig(), n_iter=32)(mel)
    assert abs(len(y) - len(x)) <= 256
    mel_y = MelExtractor(MelConfig())(y[: len(x)])
    # compare spectral shape, not loudness (GL output is peak-normalised)
    a, b = mel.mean(1) - mel.mean(), mel_y.mean(1) - mel_y.mean()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.95


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_griffin_lim_speaks_a_mel_of_one_to_three_frames(frames: int) -> None:
    # a decoder whose gate fires at once gives a mel shorter than the STFT's reflect padding
    mel = MelExtractor(MelConfig())(np.sin(np.arange(22050) / 5).astype(np.float32))[:, :frames]
    y = GriffinLim(MelConfig(), n_iter=4)(mel)
    assert y.shape == (768,) and np.isfinite(y).all() and np.abs(y).max() > 0


def test_load_audio_resamples_downmixes_and_names_bad_files(tmp_path) -> None:
    import soundfile as sf

    stereo = np.stack([np.ones(48000), -np.ones(48000)], 1).astype(np.float32) * 0.25
    sf.write(tmp_path / "s.wav", stereo, 48000, subtype="PCM_U8")
    wav, sr = load_audio(tmp_path / "s.wav", 22050)
    assert sr == 22050 and abs(len(wav) - 22050) < 10 and np.abs(wav).max() < 0.05
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav")
    with pytest.raises(DataError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")


def test_save_wav_is_atomic_and_readable(tmp_path) -> None:
    p = save_wav(tmp_path / "a" / "x.wav", np.zeros(100, np.float32), 16000)
    assert p.exists() and not list(p.parent.glob("*.tmp"))
    assert load_audio(p)[1] == 16000
