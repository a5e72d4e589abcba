"""
Performance benchmarks of airflow-provider-bfl, each against a baseline measured in the same run.

Run them all with ``make bench`` (or ``python -m benchmarks``; ``--quick`` for tiny sizes). Every
benchmark reports ratios against its own baseline rather than absolute thresholds, because the
machine they run on is shared and noisy. The emulator runs in a separate process wherever the
load is heavy, so it does not share the GIL with the code under test.
"""
