"""Operations tests (upgrade, dump and restore, removal, Debian packages): their helpers live
in pgops.py beside this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
