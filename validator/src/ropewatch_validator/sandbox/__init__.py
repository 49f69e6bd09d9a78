"""The embedded stand-in CVAT that `ropewatch demo` and the fast tests use, and its generated jobs."""
