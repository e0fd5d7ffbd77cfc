"""Device primitives instantiated by hand (ECP5 MULT18X18D and DP16KD, iCE40 SB_SPRAM256KA),
each with the behavioural Verilog model Verilator runs in its place."""
