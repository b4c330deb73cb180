"""The checks doctor runs on the host and serve runs in the container before vLLM starts, one
module per concern: the verdict row (row.py), the GPUs and their count (gpus.py), the driver
against the image track (driver.py), GPU memory against the settings (memory.py), and the
container's start (container.py). Pure functions over the settings and parsed nvidia-smi rows;
standard library only (doctor runs on the host's plain python3)."""
