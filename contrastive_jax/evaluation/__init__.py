"""Evaluating encoders: kNN (knn.py) and its monitor during pretraining
(knn_monitor.py), the online linear probe (probe.py), a classifier's accuracy
and results file (classifier_eval.py, report.py), the passes over an eval
split they share (features.py), and loading a pretrained encoder
(pretrained.py)."""
