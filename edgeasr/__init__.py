"""edgeasr: on-device streaming speech recognition (runtime package).

The runtime imports no torch. Training lives in :mod:`edgeasr.train`, export in
:mod:`edgeasr.export`, applications in :mod:`edgeasr.apps`.
"""

__version__ = "0.1.0"
