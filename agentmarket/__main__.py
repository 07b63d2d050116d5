"""`python -m agentmarket`: the `agentmarket` command."""

import sys

from agentmarket.cli import main

sys.exit(main())
