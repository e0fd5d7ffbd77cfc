"""Memories: a banked memory of block-RAM depth with registered ports (the Trainer's) and a
single-port memory on lib.memory or iCE40 SPRAM (the SerialTrainer's)."""
