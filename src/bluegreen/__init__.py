"""bluegreen: blue-green deployments from a CI/CD pipeline."""

__version__ = "0.1.0"
