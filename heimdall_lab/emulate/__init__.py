"""The local emulator: scenarios of what receivers hear, served over the real KiwiSDR protocol.

:func:`emulated` runs emulated receivers for a ``with`` block and gives their addresses and
the parameters that make a capture from them repeatable::

    from heimdall_lab.pipeline import capture
    from heimdall_lab.emulate import emulated

    with emulated(seed=0, realtime=False) as emu:
        cap = capture(10e6, 10, receivers=emu.receivers, metadata=emu.parameters)
"""

from heimdall_lab.emulate.scenario import Scenario
from heimdall_lab.emulate.server import Emulated, Emulator, Fault, emulated

__all__ = ["Emulated", "Emulator", "Fault", "Scenario", "emulated"]
