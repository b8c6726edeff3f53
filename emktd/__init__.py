"""emktd: Entropy-Monitored Kernelized Token Distillation for audio-visual transformers."""

__version__ = "0.1.0"

# CAV-MAE's audio rate: every decoder, reader and feature extractor of the project resamples to it.
SAMPLE_RATE_HZ = 16000
