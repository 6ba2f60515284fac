"""CI pipelines generated from the deploy settings (``manage.py deploy_pipeline``)."""
