"""The `ropewatch` and `validate-job` console scripts: argparse, exit codes, wiring of the layers below."""
