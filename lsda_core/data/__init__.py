"""Dataset readers and writers in the real formats (VOC, ILSVRC DET, ImageNet folders)."""
