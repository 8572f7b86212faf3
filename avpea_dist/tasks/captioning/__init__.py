"""Audio-visual captioning (AVC) on VALOR-32K: a text decoder over the AV-PEA encoder's tokens."""
