"""PLL settings for the boards' core clocks, checked against the devices' VCO and PFD ranges.

:func:`ice40_pll` (SB_PLL40, as icepll computes it) and :func:`ecp5_pll` (EHXPLLL, as ecppll
does) give the divider settings for a target frequency; boards/top.py instantiates the PLL.
"""

from __future__ import annotations

__all__ = ["ice40_pll", "ecp5_pll"]


def ice40_pll(f_in_mhz: float, f_out_mhz: float) -> dict:
    """SB_PLL40 settings (SIMPLE feedback) giving the closest frequency to ``f_out_mhz``.

    ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``, with the PFD ``f_in / (DIVR + 1)``
    in 10..133 MHz and the VCO ``PFD * (DIVF + 1)`` in 533..1066 MHz (iCE40 sysCLOCK guide,
    as icepll checks).  Returns ``{"DIVR", "DIVF", "DIVQ", "FILTER_RANGE", "f_out_mhz",
    "vco_mhz"}``.
    """
    best = None
    for divr in range(16):
        pfd = f_in_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = vco / 2 ** divq
                if not 16 <= f_out <= 275:
                    continue
                err = abs(f_out - f_out_mhz)
                if best is None or err < best[0] - 1e-9:
                    best = (err, divr, divf, divq, f_out, vco, pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting for {f_in_mhz} -> {f_out_mhz} MHz")
    _, divr, divf, divq, f_out, vco, pfd = best
    filter_range = (1 if pfd < 17 else 2 if pfd < 26 else 3 if pfd < 44 else
                    4 if pfd < 66 else 5 if pfd < 101 else 6)
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range,
            "f_out_mhz": round(f_out, 6), "vco_mhz": round(vco, 6)}


def ecp5_pll(f_in_mhz: float, f_out_mhz: float) -> dict:
    """EHXPLLL settings (feedback from CLKOP) giving the closest frequency to ``f_out_mhz``.

    ``f_out = f_in / CLKI_DIV * CLKFB_DIV``, PFD ``f_in / CLKI_DIV`` in 3.125..400 MHz, VCO
    ``f_out * CLKOP_DIV`` in 400..800 MHz (as ecppll checks; a VCO nearest 600 MHz is preferred).
    ``CLKOP_CPHASE`` is ``(CLKOP_DIV - 1) // 2`` as ecppll writes for 0 degrees.
    """
    best = None
    for clki_div in range(1, 129):
        pfd = f_in_mhz / clki_div
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = f_out * clkop_div
                if not 400 <= vco <= 800:
                    continue
                key = (round(abs(f_out - f_out_mhz), 9), abs(vco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f_out, vco)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting for {f_in_mhz} -> {f_out_mhz} MHz")
    _, clki_div, clkfb_div, clkop_div, f_out, vco = best
    return {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
            "CLKOP_CPHASE": (clkop_div - 1) // 2, "CLKOP_FPHASE": 0,
            "f_out_mhz": round(f_out, 6), "vco_mhz": round(vco, 6)}
