"""python -m authsvc: the same as the ``authsvc`` console script."""

from authsvc.cli import main

raise SystemExit(main())
