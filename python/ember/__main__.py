"""`python -m ember ...` (what torchrun runs: `torchrun --nproc-per-node N -m ember train ...`)."""

import sys

from .cli import main

sys.exit(main())
