"""One module per DVC stage (dvc.yaml): a pure core and a thin main(). A stage imports only pipeline.core."""
