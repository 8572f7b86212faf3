"""Audio-visual question answering on MUSIC-AVQA: the release reader, vocabularies, metrics and head."""
