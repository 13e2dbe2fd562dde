import sys

from rlmec.cli import main

sys.exit(main())
