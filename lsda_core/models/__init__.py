"""The networks and how they are trained: CaffeNet, Caffe's solver, pre-training, fine-tuning. Imports core, store, data."""
