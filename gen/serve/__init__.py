"""`gen serve`: a private review UI over the store (jobs, plots, records with their lineage, human review marks),
and `gen report`: the same plots and a sample of records as one HTML file. Needs the `serve` extra."""
