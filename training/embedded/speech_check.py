"""Speech check of every sounding Tux Paint stamp, kept or dropped, with Silero VAD.

Silero VAD is not one of the project's requirements; install it beside them first:
    .venv/bin/pip install --no-deps silero-vad==6.2.3
    .venv/bin/python -m training.embedded.speech_check

Prints, per stamp: whether the benchmark keeps it (and as which class), the fraction of
its duration Silero VAD marks as speech, and its mean speech probability.  Animal calls
with voice-like harmonics (hippopotamus, cow, penguin) score above zero without being
speech; the drop decisions in sources.DROPPED were made from this table plus a look at
each stamp's picture.
"""

import numpy as np
import torch

from emktd.features import SAMPLE_RATE_HZ

from . import sources
from .build import DEFAULT_CACHE


def main() -> None:
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)
    stamps_root = sources.fetch(DEFAULT_CACHE) / sources.STAMPS_DIR
    kept = {stamp: name for name, stamps in sources.CLASSES.items() for stamp in stamps}
    print("| stamp | decision | speech fraction | mean speech probability |")
    print("|---|---|---:|---:|")
    for stamp in sources.sounding_stamps(stamps_root):
        audio = torch.from_numpy(sources.decode_sound(stamps_root / f"{stamp}.ogg"))
        spans = get_speech_timestamps(audio, model, sampling_rate=SAMPLE_RATE_HZ)
        fraction = sum(s["end"] - s["start"] for s in spans) / max(1, audio.numel())
        model.reset_states()
        probs = [float(model(audio[i:i + 512], SAMPLE_RATE_HZ)) for i in range(0, audio.numel() - 511, 512)]
        decision = f"class '{kept[stamp]}'" if stamp in kept else f"dropped: {sources.DROPPED.get(stamp, '?')}"
        print(f"| {stamp} | {decision} | {fraction:.2f} | {np.mean(probs) if probs else 0:.2f} |")


if __name__ == "__main__":
    main()
