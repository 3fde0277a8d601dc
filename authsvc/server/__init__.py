"""The process: the app built from settings (the key ring, the store, the services), served
by ``serve`` (workers, signals, the embedded store), with the access log and the runner
that answers parser errors.
"""
