"""The smallest harness configuration that still trains: 16-px faces, 8 identities, a width-8 CNN, on the CPU (the
bitwise checks are CPU guarantees; on a GPU machine "auto" would pick the GPU)."""
TINY = ['train.device="cpu"', "data.synthetic.size=16", "data.synthetic.train_identities=8",
        "data.synthetic.train_images_per_identity=10",
        "data.synthetic.eval_identities=20", "data.synthetic.eval_images_per_identity=4",
        "data.synthetic.pairs_per_fold=20", "model.embedding_size=16",
        "model.width=8", "train.batch_size=16", "train.log_every=1", "train.dump_every=5", "train.checkpoint_every=5",
        "optim.lr=0.05", "optim.milestones=[100]", "eval.batch_size=64",
        "train.calibrate_at_epoch=0.4"]
