"""``python -m localentropy.experiments.reproduce.findings DOC``: re-render the findings from what is stored."""

import sys

from localentropy.experiments.reproduce.findings.rerender import main

sys.exit(main())
