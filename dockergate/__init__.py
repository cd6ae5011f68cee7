"""dockergate: a multi-user access-control proxy for the Docker Engine API."""

__version__ = "0.1.0"
