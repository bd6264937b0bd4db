"""``python -m chatkit serve`` — the same as the ``chatkit`` console script."""

import sys

from .cli import main

sys.exit(main())
