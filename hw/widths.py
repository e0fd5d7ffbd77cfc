"""Default datapath widths of the accelerator, in one place.

Each default is justified by the largest magnitudes the golden model measures
during training (``nitrod ranges``); docs/ARCHITECTURE.md records the figures.
Every unit takes its widths as constructor parameters; these are only defaults.
"""

#: Activations and inputs: NITRO Scaling saturates to [-127, 127]; NITRO-ReLU
#: outputs stay inside int8; normalised inputs are int8.
ACT_WIDTH = 8
#: Local/output errors e = yl - y lie in [-159, 127]: 9 bits signed.
ERR_WIDTH = 9
#: Weights (placeholder until measured; see docs/ARCHITECTURE.md).
WEIGHT_WIDTH = 18
#: Back-propagated errors d = e @ Wl (placeholder until measured).
BACKERR_WIDTH = 24
#: MAC accumulators: forward sums, back-propagated errors and weight gradients.
ACC_WIDTH = 48
