"""`python -m tools` is `arcade` (used where the console script may not be on PATH)."""

from tools.cli import main

main()
