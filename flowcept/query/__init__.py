"""Reading stored records: the read path.  ``frames`` decodes a batch into
columns (the only decoder), ``engine`` evaluates filters on columns in
blocks (a table per kind of store) and answers pages, streams and
statistics, ``documents`` turns rows into Flowcept-style task documents
(projection, sort order, cursors); ``filters`` is the one filter engine,
``prune`` the batch-summary index, ``limits`` a query's budget and request
checks; ``tasks`` and ``search`` are the Python readers over stores."""
