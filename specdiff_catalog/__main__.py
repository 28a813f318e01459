from specdiff_catalog.cli import main

raise SystemExit(main())
