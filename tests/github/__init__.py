"""Tests of the GitHub Action: the adapter, the docker target, the image, the workflows (act)."""
