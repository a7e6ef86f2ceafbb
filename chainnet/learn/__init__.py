"""The learning stage: graphs and load features (`features`), the queueing prior (`prior`), the
PyG dataset (`data`), the networks (`models`), the LightningModule and DataModule (`module`,
`datamodule`), metrics, evaluation and plots, and scoring with a checkpoint (`surrogate`), which
reads checkpoints safely (`checkpoint`), bounds predictions by what is physically possible and
flags inputs outside the training ranges (`ranges`, counted by `tally`)."""
