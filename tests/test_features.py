import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from conftest import tone
from emktd.features import (CAVMAE_FBANK_MEAN, CAVMAE_FBANK_STD, IMAGENET_MEAN, IMAGENET_STD, FbankConfig,
                            audio_fbank, audio_fbank_windows, frames_to_tensor)


def chirp(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (100 * t + 400 * t ** 2)) + 0.1).astype(np.float32)


def reference_fbank(wave: np.ndarray) -> torch.Tensor:
    """torchaudio's Kaldi fbank with CAV-MAE's arguments, unpadded and unnormalised."""
    x = torch.from_numpy(wave)[None]
    return kaldi.fbank(x - x.mean(), htk_compat=True, sample_frequency=16000, use_energy=False,
                       window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)


def test_matches_torchaudio_kaldi_fbank_and_pads():
    wave = chirp(3.0)
    ours = audio_fbank(wave)
    ref = reference_fbank(wave)
    assert ref.shape == (298, 128)  # 3 s at a 10 ms shift with 25 ms windows
    assert ours.shape == (1024, 128)
    torch.testing.assert_close(ours[:298], (ref - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD)
    # Zero padding happens before normalisation, as in CAV-MAE's loader.
    pad = torch.full((1024 - 298, 128), (0 - CAVMAE_FBANK_MEAN) / CAVMAE_FBANK_STD)
    torch.testing.assert_close(ours[298:], pad)


def test_long_audio_is_cut():
    wave = chirp(12.0)
    ours = audio_fbank(wave, normalize=False)
    assert ours.shape == (1024, 128)
    torch.testing.assert_close(ours, reference_fbank(wave)[:1024])


def test_tone_lands_in_its_mel_bin():
    fb = audio_fbank(tone(1000, 2.0, 16000), normalize=False)[:190]
    # HTK mel scale: 128 bins between 20 Hz and 8 kHz; 1 kHz sits near bin 45.
    mel = lambda f: 1127 * np.log(1 + f / 700)  # noqa: E731
    centres = np.linspace(mel(20), mel(8000), 130)[1:-1]
    expected = int(np.argmin(np.abs(centres - mel(1000))))
    assert abs(int(fb.mean(0).argmax()) - expected) <= 1


def test_stereo_is_averaged():
    left, right = chirp(1.0), tone(500, 1.0, 16000)
    torch.testing.assert_close(audio_fbank(np.stack([left, right])), audio_fbank((left + right) / 2))


def test_shorter_than_one_window_is_padded():
    assert audio_fbank(np.zeros(100, np.float32)).shape == (1024, 128)


def test_windows_are_fbanks_of_consecutive_seconds():
    wave = chirp(4.6)  # shorter than five windows: the last is zero-padded
    config = FbankConfig(num_frames=96)
    windows = audio_fbank_windows(wave, num_windows=5, window_s=1.0, config=config)
    assert windows.shape == (5, 96, 128)
    for i in range(4):
        torch.testing.assert_close(windows[i], audio_fbank(wave[i * 16000:(i + 1) * 16000], config=config))
    padded = np.pad(wave[64000:], (0, 80000 - wave.size))
    torch.testing.assert_close(windows[4], audio_fbank(padded, config=config))


def test_frames_resize_crop_and_normalise():
    frames = np.zeros((2, 240, 480, 3), np.uint8)
    frames[:, :, :120] = 255  # the left quarter is cut away by the centre crop
    frames[1] = (np.array(IMAGENET_MEAN) * 255).round().astype(np.uint8)
    x = frames_to_tensor(frames, image_size=112)
    assert x.shape == (2, 3, 112, 112)
    # Frame 0: black after the crop, except for the resampling edge.
    black = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[0, :, :, 4:].mean(dim=(1, 2)), black, atol=1e-3, rtol=0)
    assert x[1].abs().max() < 0.01  # the ImageNet mean maps to zero


def test_frames_reject_wrong_layout():
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        frames_to_tensor(np.zeros((2, 3, 64, 64), np.uint8))
