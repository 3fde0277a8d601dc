"""The domain: sessions (login, rotation, grace, replay, revocation), passwords, rate
limits, client addresses and the events the service reports.

Takes plain values and ``now``; knows nothing of aiohttp.
"""
