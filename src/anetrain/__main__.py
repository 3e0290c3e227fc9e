"""``python -m anetrain``: what torchrun launches (``torchrun ... -m anetrain train ...``)."""

from anetrain.cli import main

raise SystemExit(main())
