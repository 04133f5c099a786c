"""The node leader: drains the rings of a node's ranks into a transport.

``drain`` (pack -> publish -> flush -> release), ``spill`` (replay of a ring's
overflow file), ``spool`` (batches kept while the transport is down),
``recovery`` (rings a killed job left behind), ``leader`` (the leaders that
capture asks the registry for).  Transports are opened by name through the
registry, so this layer imports nothing from the transport layer above it.
"""
