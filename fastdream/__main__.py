"""``python -m fastdream``: the ``fastdream`` command (see ``fastdream.cli``)."""

import sys

from fastdream.cli import main

if __name__ == "__main__":
    sys.exit(main())
