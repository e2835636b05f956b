"""clerk-sync: mirror Clerk instances into SQL and turn every change into a webhook-shaped event.

Data flow, one folder or module per step:
enroll (vault, store.tenants) -> schedule (daemon) -> walk (clerk/) -> diff (diff.py)
-> mirror + outbox (store/) -> deliver (delivery/).
"""

__version__ = "0.1.0"
