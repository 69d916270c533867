"""Hypervisor drivers. VMware vSphere (through pyvmomi) is the first."""
