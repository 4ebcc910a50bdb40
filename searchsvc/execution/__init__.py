"""The Ray side, and the only code that imports Ray: the runner (``runner``), the trial
trainable (``trainable``), the Tune callbacks (``callbacks``), the schedulers, and reseeds and
refits as Ray tasks (``retrain``)."""
