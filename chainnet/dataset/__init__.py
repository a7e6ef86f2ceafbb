"""The on-disk dataset format: its tables (`tables`), the sharded store with its manifest and
checksums (`store`), the reader of the published ChainNet format (`published`) and the check that
our simulator reproduces the published labels (`replicate`)."""
