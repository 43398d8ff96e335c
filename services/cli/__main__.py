"""``python -m services.cli``: how Ray jobs run raynas commands."""
from . import run

run()
