"""The record: one task's who/when/what as fixed fields plus a payload.

The bottom of the house.  ``layout`` mirrors the C format header
(csrc/fc_format.h) as numpy dtypes, ``payload`` encodes used/generated
values, ``job`` names a job and the node-local paths derived from it, and
``document`` turns records into Flowcept-style task documents at read time.
Pure Python: nothing here touches the compiled extension.
"""
