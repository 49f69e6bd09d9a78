"""Auto versus reference: split, per-frame matching, metrics and the error taxonomy (no I/O)."""
