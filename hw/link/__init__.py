"""The board link: the UART, the host link (framed, CRC-checked commands to the host bus) and
LinkedCore, the chain from the serial line to a core that the board top and the simulated-UART
backend both use."""
