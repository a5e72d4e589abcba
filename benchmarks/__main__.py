"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmarks and print the table."""

import sys

from benchmarks.run import main

sys.exit(main())
