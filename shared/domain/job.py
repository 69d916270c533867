"""CloudStack async jobs: status codes and how a deploy's events settle its job."""

from __future__ import annotations

from enum import IntEnum

PENDING_RESULT_CODE = 0
FAILED_RESULT_CODE = 530


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
