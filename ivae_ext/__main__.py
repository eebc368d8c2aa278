import sys

from ivae_ext.cli import main

sys.exit(main())
