"""`python -m perception.replay INPUT... --out DIR` (= `perception replay`)."""

import sys

from perception.replay.cli import replay_main

sys.exit(replay_main())
