import sys

from flowcept.cli import main

sys.exit(main())
