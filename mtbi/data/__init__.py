"""Data preparation: Kaldi data dirs, corpus readers, audio I/O, features, word alignment."""
