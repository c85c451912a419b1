"""The ``chatcli`` command. Each subcommand lives in its own module, imported
only when that subcommand runs, so that ``chatcli --help`` starts fast."""
