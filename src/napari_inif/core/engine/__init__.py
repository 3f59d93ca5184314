"""Running a fit: in this process (``local``) or block by block over a source, in this
process or on a Dask cluster (``distributed``)."""
