"""Dataset generation, an application of the chainnet library: `python -m datagen n=50000`.

Modules: `presets` (scenario samplers of conf/scenario/), `generate` (sample, simulate and store,
resumable), `executors` (local processes or Dask), `defaults` (the command line's defaults for
scripts), and the commands `__main__`, `verify` and `import_chainnet`. The dataset format itself
is `chainnet.dataset`.
"""
