"""Benchmarks and the studies behind the defaults: run each as `python -m bench.<script>` from the repository
root (bench/README.md says which script wrote which result file, and which default it justifies)."""
