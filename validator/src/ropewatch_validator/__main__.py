import sys

from ropewatch_validator.cli.main import main

sys.exit(main())
