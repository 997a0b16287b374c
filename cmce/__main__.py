import sys

from cmce.cli import main

sys.exit(main())
