import sys

from collabkit.cli import main

sys.exit(main())
