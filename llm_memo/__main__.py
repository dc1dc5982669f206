"""`python -m llm_memo`: the llm-memo command line."""

import sys

from ._tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
