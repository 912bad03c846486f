import sys

from gs_core.cli import main

sys.exit(main())
