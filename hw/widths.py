"""Default datapath widths of the accelerator, in one place.

Each default is justified by the largest magnitudes the golden model measures
during training (``nitrod ranges``) plus headroom; every width is guarded in
hardware (a sticky overflow flag), never wrapped silently. Measured with
``nitrod ranges --dataset mnist5k --model mlp --hidden 100,50 --epochs 100 --seed 42``
(65 epochs run, early stop); docs/ARCHITECTURE.md has the table.
Every unit takes its widths as constructor parameters; these are only defaults.
"""

#: Activations and inputs: NITRO Scaling saturates to [-127, 127]; NITRO-ReLU
#: outputs lie in [-73, 96]; normalised inputs are int8. Measured max 127.
ACT_WIDTH = 8
#: Local/output errors e = y_pred - y lie in [-159, 127] by construction: 9 bits.
ERR_WIDTH = 9
#: Weights: measured max |W| 12,247 (15 bits signed) after 65 epochs and the
#: authors saw > 17,000 at 100 epochs, still growing. 18 bits (+-131,071) gives
#: ~10x headroom and is exactly one ECP5 MULT18X18D operand.
WEIGHT_WIDTH = 18
#: Back-propagated errors d = e @ Wl: measured max 104,771 (18 bits signed);
#: 24 bits gives 64x headroom (worst case 9 + 18 + log2(classes) bits).
BACKERR_WIDTH = 24
#: MAC accumulators: forward sums (measured 28 bits), weight gradients
#: (measured 27 bits); worst cases 8 + 18 + log2(784) = 36 and
#: 24 + 8 + log2(64) = 38 bits. 48 bits covers both with margin.
ACC_WIDTH = 48
