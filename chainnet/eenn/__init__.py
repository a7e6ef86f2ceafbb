"""Early-exit networks and their profiles (SPEC section 6): the profile file, read and checked
without torch (`profile`), a multi-exit network of blocks and exit heads, the digits data and the
training (`network`), what the network does at every vector of exit thresholds and what each block
costs (`measure`), and the plot of the profile's front (`plots`)."""
