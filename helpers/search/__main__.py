import sys

from helpers.search.cli import main

sys.exit(main())
