"""The Optuna side: the search space (``space``), samplers, the Ray searcher around a
persistent Optuna study (``searcher``), each trial's Ray config (``trial_config``) and the
study's storage, claim and recovery (``storage``)."""
