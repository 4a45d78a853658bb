"""Pure PyTorch: backbones, the instance-segmentation methods, losses, decoders, datasets, training.

Nothing here imports Prefect or talks to S3.
"""
