"""`python -m bot` is the `backupbot` command."""

from bot.cli import main

raise SystemExit(main())
