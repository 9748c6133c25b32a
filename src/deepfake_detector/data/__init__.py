"""Data: import, demo set, validation (GX, per-file pass, label issues), split."""
