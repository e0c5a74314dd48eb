import sys

from localentropy.cli import main

sys.exit(main())
