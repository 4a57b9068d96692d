from replicator.cli import main

raise SystemExit(main())
