"""python -m perception.demo (what `./dev demo` runs)."""

import sys

from perception.demo.app import main

sys.exit(main())
