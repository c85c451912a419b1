"""chatcli: end-to-end encrypted chat for the terminal.

Subpackages: ``crypto`` (pure cryptography), ``protocol`` (sans-I/O wire
protocol), ``relay`` (the Trio relay server), ``client`` (the Trio client) and
``cli`` (the ``chatcli`` command). Importing this package imports nothing heavy.
"""

__version__ = "0.1.0.dev0"
