"""PFS servers: the metaserver (namespace + token manager) and the fileservers (stripe storage).

Each is split into plain domain classes that know nothing of gRPC and a thin servicer that
translates messages into calls; `serve()` in each package starts one server.
"""
