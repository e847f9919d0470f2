"""Export formats (docs/annotation.md, "Export schemas"): the filter, the streaming writers and the datasheet.

- ``filters``: the validated, canonical export filter (rounds, min agreement, min annotators, source, date range);
- ``hashing``: a write-only stream that hashes every byte on its way to disk;
- ``formats``: one writer per ``Export.Format``, each consuming row chunks from ``annotation.selectors.exports``
  (constant memory: a chunk at a time, Parquet row group per chunk, JSON/CSV lines as they come).
"""
