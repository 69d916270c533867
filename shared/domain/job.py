"""CloudStack async jobs: status codes and how a deploy's events settle its job."""

from __future__ import annotations

from enum import IntEnum

from proto.events import JobCompleted
from shared.errors import INTERNAL_ERROR

FAILED_RESULT_CODE = INTERNAL_ERROR


class JobStatus(IntEnum):
    PENDING = 0
    SUCCEEDED = 1
    FAILED = 2


DEPLOY_VM_CMD = "org.apache.cloudstack.api.command.user.vm.DeployVMCmd"
DESTROY_VM_CMD = "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd"
CREATE_VM_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.vmsnapshot.CreateVMSnapshotCmd"
DELETE_VM_SNAPSHOT_CMD = "org.apache.cloudstack.api.command.user.vmsnapshot.DeleteVMSnapshotCmd"
REVERT_VM_SNAPSHOT_CMD = (
    "org.apache.cloudstack.api.command.user.vmsnapshot.RevertToVMSnapshotCmd")
SYNC_INVENTORY_CMD = "snapdeploy.syncInventory"
DELETE_ACCOUNT_CMD = "org.apache.cloudstack.api.command.admin.account.DeleteAccountCmd"
START_VM_CMD = "org.apache.cloudstack.api.command.user.vm.StartVMCmd"
STOP_VM_CMD = "org.apache.cloudstack.api.command.user.vm.StopVMCmd"
REBOOT_VM_CMD = "org.apache.cloudstack.api.command.user.vm.RebootVMCmd"
CREATE_VOLUME_CMD = "org.apache.cloudstack.api.command.user.volume.CreateVolumeCmd"
ATTACH_VOLUME_CMD = "org.apache.cloudstack.api.command.user.volume.AttachVolumeCmd"
DETACH_VOLUME_CMD = "org.apache.cloudstack.api.command.user.volume.DetachVolumeCmd"
RESIZE_VOLUME_CMD = "org.apache.cloudstack.api.command.user.volume.ResizeVolumeCmd"
# Jobs answered with their VM (a revert too: CloudStack answers it with the VM).
VM_COMMANDS = {DEPLOY_VM_CMD, DESTROY_VM_CMD, START_VM_CMD, STOP_VM_CMD, REBOOT_VM_CMD,
               REVERT_VM_SNAPSHOT_CMD}
VOLUME_COMMANDS = {CREATE_VOLUME_CMD, ATTACH_VOLUME_CMD, DETACH_VOLUME_CMD, RESIZE_VOLUME_CMD}


def failed(job_id: str, reason: str) -> JobCompleted:
    """A job that could not be done, with CloudStack's code for it and the reason."""
    return JobCompleted(job_id=job_id, succeeded=False, error_code=FAILED_RESULT_CODE,
                        error_text=reason)


def succeeded(job_id: str) -> JobCompleted:
    return JobCompleted(job_id=job_id, succeeded=True)
