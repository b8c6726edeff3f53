"""The embedded benchmark: real recordings and pictures from Debian packages (:mod:`.sources`),
composited into clips (:mod:`.synth`), written in the real datasets' layouts (:mod:`.writers`)
by the builder (:mod:`.build`, ``python -m training.embedded.build``); :mod:`.clips` reads back
what the build recorded per clip."""
