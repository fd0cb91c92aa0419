"""``python -m storewarden``."""

from storewarden.cli import main

main()
