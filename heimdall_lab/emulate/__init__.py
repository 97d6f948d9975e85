"""The local emulator: scenarios of what receivers hear, served over the real KiwiSDR protocol."""
