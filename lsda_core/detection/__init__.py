"""From networks to detections: proposals, region features, HOG, SVMs, box regression, scoring and
NMS, the fast (SPP) detector, and the pipeline that joins them. Imports core, store, data, models,
evaluation."""
