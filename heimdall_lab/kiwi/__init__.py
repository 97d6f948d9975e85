"""The receiver side: the KiwiSDR protocol, clients, recordings, concurrent acquisition."""
