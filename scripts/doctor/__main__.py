import sys

from scripts.doctor.cli import main

sys.exit(main())
