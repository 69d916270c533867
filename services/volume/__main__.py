"""python -m services.volume: volumes from VM snapshots; attach, detach and resize them."""

from services.volume.handlers import Volumes
from shared.runtime import Runtime

if __name__ == "__main__":
    Runtime("volume").serve(
        Volumes, "Create volumes from the disks of VM snapshots; attach, detach and resize "
        "volumes.")
