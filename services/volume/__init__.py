"""volume: creates volumes from the disks of VM snapshots."""
