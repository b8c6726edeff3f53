"""Speech check of every sounding Tux Paint stamp, kept or dropped, and of every further
instance's recording (training/embedded/catalog.py), with Silero VAD.

Silero VAD is not one of the project's requirements; install it beside them first:
    .venv/bin/pip install --no-deps silero-vad==6.2.3
    .venv/bin/python -m training.embedded.speech_check

Prints, per stamp or catalogue recording: whether the benchmark keeps it (and as which class),
the fraction of its duration Silero VAD marks as speech, and its mean speech probability.  Animal calls
with voice-like harmonics (hippopotamus, cow, penguin) score above zero without being
speech; the drop decisions in sources.DROPPED were made from this table plus a look at
each stamp's picture.
"""

import numpy as np
import torch

from emktd.features import SAMPLE_RATE_HZ

from . import catalog, sources
from .build import DEFAULT_CACHE
from .origins import Origins


def main() -> None:
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)
    root = sources.fetch(DEFAULT_CACHE)
    stamps_root = root / sources.STAMPS_DIR
    kept = {stamp: name for name, stamps in sources.CLASSES.items() for stamp in stamps}
    print("| stamp or recording | decision | speech fraction | mean speech probability |")
    print("|---|---|---:|---:|")

    def row(name: str, audio: np.ndarray, decision: str) -> None:
        audio = torch.from_numpy(audio)
        spans = get_speech_timestamps(audio, model, sampling_rate=SAMPLE_RATE_HZ)
        fraction = sum(s["end"] - s["start"] for s in spans) / max(1, audio.numel())
        model.reset_states()
        probs = [float(model(audio[i:i + 512], SAMPLE_RATE_HZ)) for i in range(0, audio.numel() - 511, 512)]
        print(f"| {name} | {decision} | {fraction:.2f} | {np.mean(probs) if probs else 0:.2f} |", flush=True)

    for stamp in sources.sounding_stamps(stamps_root):
        decision = f"class '{kept[stamp]}'" if stamp in kept else f"dropped: {sources.DROPPED.get(stamp, '?')}"
        row(stamp, sources.decode_sound(stamps_root / f"{stamp}.ogg"), decision)
    origins = Origins(root)
    for name, instances in catalog.INSTANCES.items():
        for instance in instances:
            row(instance.sound, origins.sound(instance.sound, sources.INSTANCE_MAX_S), f"class '{name}' (catalogue)")

if __name__ == "__main__":
    main()
