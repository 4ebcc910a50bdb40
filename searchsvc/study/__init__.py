"""What to search and where its results go: the study file's schema (``spec``), its loader
(``loader``), the study's locations (``locations``) and the diagnosis recipe (``diagnosis``)."""
