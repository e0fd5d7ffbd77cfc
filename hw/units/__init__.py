"""The arithmetic units: NITRO-D's integer operations, each a stream component checked bit for
bit against golden/ (the pipelined long divider, NITRO Scaling, NITRO-ReLU forward and
backward, the IntegerSGD update) and the one-value-at-a-time post-processing of the serial
core (a serial divider and SerialPost)."""
