"""CVAT access: one job pulled through cvat-sdk into plain tables, and its frames downloaded as CVAT sends them."""
