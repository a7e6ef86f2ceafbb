"""The on-disk dataset format: its tables (`tables`), writing shards and the manifest with their
checksums (`store`), reading them checked (`reader`: checksums, files that do not belong,
completeness), the reader of the published ChainNet format (`published`) and the check that our
simulator reproduces the published labels (`replicate`)."""
