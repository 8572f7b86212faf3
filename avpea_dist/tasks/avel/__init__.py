"""Audio-visual event localisation (AVEL) on AVE: one event class per one-second segment."""
