"""Audio-visual retrieval (AVR) on VALOR-32K: text <-> clip, global negatives across ranks."""
