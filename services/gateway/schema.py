"""The objects the API answers with, declared once: each command's registration names the
shape it answers with (``@command(..., response=VM)``), and listApis, the OpenAPI document
and docs/api.md describe it from here. ``services.gateway.views`` renders them."""

from __future__ import annotations

from services.gateway.api import Field, Shape


def _f(name: str, type_: str, description: str, *fields: Field) -> Field:
    return Field(name, type_, description, tuple(fields))


_ID = _f("id", "string", "the object's UUID")
_NAME = _f("name", "string", "its name")
_CREATED = _f("created", "date", "when it was created")
_ACCOUNT = _f("account", "string", "the UUID of the account that owns it")
_ZONE = _f("zoneid", "string", "the UUID of its zone")
_HYPERVISOR = _f("hypervisor", "string", "the hypervisor of its zone (VMware, KVM)")

NIC = _f("nic", "set", "the VM's network interfaces",
         _f("id", "string", "the NIC's UUID"),
         _f("networkid", "string", "the UUID of its network"),
         _f("macaddress", "string", "its MAC address"),
         _f("isdefault", "boolean", "true for the VM's first NIC"))

VM = Shape("virtualmachine", "a virtual machine", (
    _ID, _NAME,
    _f("displayname", "string", "its display name"),
    _f("instancename", "string", "its name on the hypervisor"),
    _ACCOUNT, _ZONE,
    _f("serviceofferingid", "string", "the UUID of its compute offering"),
    _f("templateid", "string", "the UUID of the template it was deployed from"),
    _f("vmsnapshotid", "string", "the UUID of the VM snapshot it was deployed from"),
    _f("hostid", "string", "the UUID of the host it runs on"),
    _f("cpunumber", "integer", "its number of CPUs"),
    _f("cpuspeed", "integer", "the speed of each CPU in MHz"),
    _f("memory", "integer", "its memory in MiB"),
    _f("state", "string", "Starting, Running, Stopped, Destroyed, Expunging, Error"),
    _CREATED, _HYPERVISOR,
    _f("errortext", "string", "why its deploy failed, if it did"),
    NIC,
))

JOB = Shape("asyncjobs", "an asynchronous job", (
    _f("jobid", "string", "the job's UUID"),
    _f("accountid", "string", "the UUID of the account that started it"),
    _f("userid", "string", "the UUID of the user that started it"),
    _f("cmd", "string", "the command it runs"),
    _f("jobstatus", "integer", "0 pending, 1 succeeded, 2 failed"),
    _f("jobprocstatus", "integer", "always 0"),
    _f("jobresultcode", "integer", "0, or the error code of a failed job"),
    _f("jobresulttype", "string", "object"),
    _f("jobresult", "responseobject", "what a finished job made or changed (under its "
       "object's key, or success), or errorcode and errortext"),
    _f("jobinstancetype", "string", "the kind of object it acts on"),
    _f("jobinstanceid", "string", "the UUID of the object it acts on"),
    _CREATED,
    _f("completed", "date", "when it finished"),
))

ZONE = Shape("zone", "a zone: a vCenter datacenter or a KVM zone", (
    _ID, _NAME,
    _f("networktype", "string", "Advanced"),
    _f("allocationstate", "string", "Enabled"),
    _f("localstorageenabled", "boolean", "false"),
    _HYPERVISOR,
))

HOST = Shape("host", "a hypervisor host", (
    _ID, _NAME, _ZONE,
    _f("type", "string", "Routing"),
    _HYPERVISOR,
    _f("state", "string", "Up, Down, Disconnected"),
    _f("resourcestate", "string", "Enabled"),
    _f("clustername", "string", "the name of its cluster"),
    _f("cpunumber", "integer", "its number of CPU cores"),
    _f("cpuspeed", "long", "the speed of each core in MHz"),
    _f("cpuallocated", "long", "the CPU reserved by its VMs, in MHz"),
    _f("memorytotal", "long", "its memory in bytes"),
    _f("memoryallocated", "long", "the memory reserved by its VMs, in bytes"),
    _f("storagepoolids", "list", "the UUIDs of the storage pools it reaches"),
))

POOL = Shape("storagepool", "a primary storage pool", (
    _ID, _NAME, _ZONE,
    _f("state", "string", "Up or Down"),
    _f("type", "string", "the pool's type, as its zone's hypervisor names it"),
    _f("scope", "string", "CLUSTER or HOST"),
    _f("path", "string", "where the pool is"),
    _f("disksizetotal", "long", "its capacity in bytes"),
    _f("disksizeused", "long", "the bytes in use"),
    _f("hostids", "list", "the UUIDs of the hosts that reach it"),
    _f("vmwarecreatefullclone", "boolean", "whether VMs deployed on it are full clones"),
))

NETWORK = Shape("network", "a guest network", (
    _ID, _NAME,
    _f("displaytext", "string", "its display text"),
    _ZONE,
    _f("state", "string", "Implemented"),
    _f("type", "string", "Shared"),
    _f("traffictype", "string", "Guest"),
    _f("broadcasturi", "string", "the hypervisor's name for the network"),
))

SERVICE_OFFERING = Shape("serviceoffering", "a compute offering", (
    _ID, _NAME,
    _f("displaytext", "string", "its display text"),
    _f("cpunumber", "integer", "the number of CPUs"),
    _f("cpuspeed", "integer", "the speed of each CPU in MHz"),
    _f("memory", "integer", "the memory in MiB"),
    _CREATED,
))

DISK_OFFERING = Shape("diskoffering", "a disk offering", (
    _ID, _NAME,
    _f("displaytext", "string", "its display text"),
    _f("disksize", "long", "the size of its disks in GB"),
    _CREATED,
))

TEMPLATE = Shape("template", "a template seeded from a VM snapshot on its pool", (
    _ID, _NAME,
    _f("displaytext", "string", "its display text"),
    _ZONE, _HYPERVISOR,
    _f("format", "string", "its disk format"),
    _f("isready", "boolean", "true: seeded templates are ready"),
    _f("status", "string", "Download Complete"),
    _f("templatetype", "string", "USER"),
    _ACCOUNT, _CREATED,
    _f("vmsnapshotid", "string", "the UUID of the VM snapshot it was seeded from"),
    _f("storageid", "string", "the UUID of the primary storage pool that holds it"),
    _f("installpath", "string", "where it is on its pool"),
))

VM_SNAPSHOT = Shape("vmsnapshot", "a VM snapshot", (
    _ID, _NAME,
    _f("displayname", "string", "its display name"),
    _f("description", "string", "its description"),
    _f("virtualmachineid", "string", "the UUID of its VM"),
    _f("parent", "string", "the UUID of its parent snapshot"),
    _f("parentName", "string", "the name of its parent snapshot"),
    _f("current", "boolean", "whether the VM runs on top of it"),
    _f("type", "string", "Disk or DiskAndMemory"),
    _f("state", "string", "Allocated, Creating, Ready, Error"),
    _CREATED, _ACCOUNT,
    _f("cpunumber", "integer", "its VM's number of CPUs when taken"),
    _f("memory", "integer", "its VM's memory in MiB when taken"),
))

VOLUME = Shape("volume", "a disk volume", (
    _ID, _NAME,
    _f("type", "string", "ROOT or DATADISK"),
    _f("size", "long", "its size in bytes"),
    _f("storageid", "string", "the UUID of its primary storage pool"),
    _f("path", "string", "its disk on the pool"),
    _f("virtualmachineid", "string", "the UUID of the VM it is attached to"),
    _f("templateid", "string", "the UUID of the template its root disk comes from"),
    _f("diskofferingid", "string", "the UUID of its disk offering"),
    _f("state", "string", "Allocated, Creating, Ready, Destroy"),
    _ACCOUNT, _ZONE, _CREATED,
))

USER = _f("user", "list", "the account's users",
          _f("id", "string", "the user's UUID"),
          _f("username", "string", "the user's name"),
          _f("accountid", "string", "the UUID of the user's account"),
          _f("account", "string", "the name of the user's account"),
          _f("email", "string", "the user's email"),
          _f("firstname", "string", "the user's first name"),
          _f("lastname", "string", "the user's last name"),
          _f("state", "string", "enabled"),
          _CREATED)

ACCOUNT = Shape("account", "an account", (
    _ID, _NAME,
    _f("state", "string", "enabled"),
    _f("accounttype", "integer", "0 for a user account, 1 for an admin"),
    _f("roletype", "string", "User or Admin"),
    _CREATED, USER,
))

USER_KEYS = Shape("userkeys", "a user's new API key pair", (
    _f("apikey", "string", "the API key"),
    _f("secretkey", "string", "the secret key, shown this once"),
))

EVENT = Shape("event", "an audit event", (
    _ID,
    _f("type", "string", "CloudStack's event type (VM.CREATE, ...)"),
    _f("level", "string", "INFO or ERROR"),
    _f("state", "string", "Completed"),
    _f("description", "string", "what happened"),
    _f("username", "string", "who did it (account/user)"),
    _f("account", "string", "the UUID of the account it happened in"),
    _CREATED,
    _f("parentid", "string", "the id of the request that caused it"),
))

CONFIGURATION = Shape("configuration", "a setting", (
    _NAME,
    _f("value", "string", "its value"),
    _f("defaultvalue", "string", "its default"),
    _f("scope", "string", "global or storagepool"),
    _f("id", "string", "the UUID of the storage pool it is set for"),
    _f("category", "string", "Advanced"),
    _f("isdynamic", "boolean", "true: takes effect without a restart"),
    _f("description", "string", "what it does"),
))

RESOURCE_LIMIT = Shape("resourcelimit", "an account's limit on one resource", (
    _f("account", "string", "the account's name"),
    _f("accountid", "string", "the account's UUID"),
    _f("domain", "string", "ROOT"),
    _f("resourcetype", "string", "the resource's number"),
    _f("resourcetypename", "string", "the resource's name"),
    _f("max", "long", "how much the account may hold; -1 for no limit"),
))

SUCCESS = Shape("success", "whether the command succeeded", (
    _f("success", "boolean", "true"),
    _f("displaytext", "string", "what happened, if anything is said"),
), relates=False)

_API_PARAM = _f("params", "set", "the parameters it takes",
                _f("name", "string", "the parameter's name"),
                _f("description", "string", "what it is"),
                _f("type", "string", "its CloudStack type"),
                _f("length", "integer", "its maximum length"),
                _f("required", "boolean", "whether it is required"),
                _f("since", "string", "the release that added it"),
                _f("related", "string", "comma-separated commands that list what it names"))


def _response_field(depth: int) -> Field:
    inner: tuple[Field, ...] = (_f("name", "string", "the field's name"),
             _f("description", "string", "what it is"),
             _f("type", "string", "its type"))
    if depth:
        inner += (_response_field(depth - 1),)
    return _f("response", "set", "the fields of its response" if depth == 1 else
              "the fields of a nested object", *inner)


API = Shape("api", "an API command", (
    _NAME,
    _f("description", "string", "what it does"),
    _f("isasync", "boolean", "whether it answers with a job"),
    _f("since", "string", "the release it follows (4.20.0 for upstream's, snapdeploy for "
       "its own)"),
    _f("related", "string", "comma-separated commands answering with the same object"),
    _f("type", "string", "the key its object is answered under"),
    _API_PARAM,
    _response_field(1),
))

CAPABILITIES = Shape("capability", "what this cloud offers", (
    _f("cloudstackversion", "string", "the CloudStack release whose API it follows"),
    _f("userpublictemplateenabled", "boolean", "false"),
    _f("supportELB", "string", "false"),
    _f("projectinviterequired", "boolean", "false"),
    _f("allowusercreateprojects", "boolean", "false"),
    _f("customdiskofferingminsize", "long", "1"),
    _f("customdiskofferingmaxsize", "long", "1024"),
    _f("kvmsnapshotenabled", "boolean", "false"),
    _f("kubernetesserviceenabled", "boolean", "false"),
    _f("dynamicrolesenabled", "boolean", "false"),
    _f("allowuserviewdestroyedvm", "boolean", "true"),
    _f("allowuserexpungerecovervm", "boolean", "true"),
))
