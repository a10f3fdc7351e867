"""``python -m biomedclip`` runs the CLI."""

from biomedclip.cli import main

main()
