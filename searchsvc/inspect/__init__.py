"""Reading and managing finished studies: the trials table, the best params as a study-file
fragment, the list of studies, deletion, the dashboard (``searchsvc trials|best|ls|delete|
dashboard``). Nothing here creates a store: a study that has not run is an error."""
