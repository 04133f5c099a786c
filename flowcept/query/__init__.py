"""Reading stored records: one filter engine (``filters``) with a column
provider per store, Flowcept-style task documents (``tasks``), indexed
queries over batch summaries (``search``) and summaries (``summary``)."""
