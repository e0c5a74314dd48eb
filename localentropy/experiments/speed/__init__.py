"""The speed benchmark of the inner loop, in units of one gradient evaluation G, measured interleaved: one
Entropy-SGD inner step and its floor (``entropy``), one sampler step (``samplers``), the estimator's throughput and
the ``posteriors`` peers (``sections``); the targets and tables (``report``); the command (``run_all``, also
``python -m localentropy.experiments.speed``). ``benchmarks/run_all.py`` and ``benchmarks/bench_samplers.py`` are
thin wrappers; ``localentropy reproduce`` runs it for the findings' overhead section."""
