"""CVAT access: one job pulled through cvat-sdk into plain tables; its frames fetched as CVAT sends them."""
