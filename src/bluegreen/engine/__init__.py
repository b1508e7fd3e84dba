"""The engine behind `Pipeline` (pipeline.py), one module per concern, as the run tells it:

run.py        the run itself: its result and report, its phases, its lock, how it ends (status, reason)
checks.py     what is checked before live traffic moves and right after: live, ready, suite, smoke, verify, analysis
schema.py     the database changes around a release: lint, expand, contract, and the guards of the contract
release.py    the blue-green switch: switch, verify, record; the way back when it fails or is cancelled
canary.py     the canary: its steps and their weights, gates, pause, resume and abort
scaledown.py  the old colour after a release: kept for a delay, then scaled down
plan.py       the dry run: what deploy would do

Each concern is a class that `Pipeline` inherits, built on the ones it uses (its bases), over one state:
the settings, the target, the result of this run.
"""
