"""emktd: Entropy-Monitored Kernelized Token Distillation for audio-visual transformers."""

__version__ = "0.1.0"
