import sys

from twostream_lib.cli import main

sys.exit(main())
