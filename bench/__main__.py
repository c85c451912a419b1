"""``python -m bench``: run every benchmark and print one JSON document."""

from bench.run_all import main

raise SystemExit(main())
