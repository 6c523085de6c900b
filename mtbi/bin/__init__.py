"""One ``python -m mtbi.bin.<name>`` entry point per stage step; each only parses arguments."""
