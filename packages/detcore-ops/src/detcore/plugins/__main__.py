import sys

from detcore.plugins.cli import main

sys.exit(main())
