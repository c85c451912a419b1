"""The sans-I/O relay wire protocol shared by relay and client.

Contains no networking code at all: feed bytes in, take frames out, turn
frames into bytes. ``frames`` and ``codes`` are the wire contract.
"""
