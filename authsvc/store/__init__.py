"""The store: users, sessions and rate-limit counters in Redis, behind one ``Store``.

``redis_store`` holds the Store and its scripts (``lua/``), ``records`` what it returns,
``settings_check`` what Redis's own settings put at risk, ``keyspace`` and ``scriptkeys``
every key name and each script's KEYS, ``urls`` what AUTHSVC_REDIS_URL says, ``connect``
the client for each topology (one server, Sentinel, Cluster, memory://), ``errors`` which
Redis failures are an unavailable store, ``embedded`` the bundled Valkey and
``supervision`` its restarts. Import from the module itself: this package imports nothing,
so reading a URL does not load redis-py.
"""
