"""Dataset generation: `python -m datagen n=50000 scenario=dsn24 out=data/dsn24`."""
