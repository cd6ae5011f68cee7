"""Field names of the request bodies dockerd decodes: GENERATED, do not edit.

Made by tools/gen_schema.py from moby's Go structs, united over:
- main (b985e2313a8676e18072b442911fc8f64f17d440)
- v28.5.2
- v20.10.24

Spec strings: str int num bool bytes strs any; [X] list; {X} map with string
keys (keys are data); pkg.Name a struct in STRUCTS; struct{} an object with no
fields.  A comment lists the refs having a field when that is not all of them.
"""

STRUCTS: dict[str, dict[str, str]] = {
    "blkiodev.ThrottleDevice": {
        "Path": "str",
        "Rate": "int",
    },
    "blkiodev.WeightDevice": {
        "Path": "str",
        "Weight": "int",
    },
    "container.Config": {
        "Hostname": "str",
        "Domainname": "str",
        "User": "str",
        "AttachStdin": "bool",
        "AttachStdout": "bool",
        "AttachStderr": "bool",
        "ExposedPorts": "{struct{}}",
        "Tty": "bool",
        "OpenStdin": "bool",
        "StdinOnce": "bool",
        "Env": "[str]",
        "Cmd": "strs",
        "Healthcheck": "v1.HealthcheckConfig",
        "ArgsEscaped": "bool",
        "Image": "str",
        "Volumes": "{struct{}}",
        "WorkingDir": "str",
        "Entrypoint": "strs",
        "NetworkDisabled": "bool",
        "OnBuild": "[str]",
        "Labels": "{str}",
        "StopSignal": "str",
        "StopTimeout": "int",
        "Shell": "strs",
        "MacAddress": "str",  # v28.5.2 v20.10.24
    },
    "container.CreateRequest": {
        "Hostname": "str",
        "Domainname": "str",
        "User": "str",
        "AttachStdin": "bool",
        "AttachStdout": "bool",
        "AttachStderr": "bool",
        "ExposedPorts": "{struct{}}",
        "Tty": "bool",
        "OpenStdin": "bool",
        "StdinOnce": "bool",
        "Env": "[str]",
        "Cmd": "strs",
        "Healthcheck": "v1.HealthcheckConfig",
        "ArgsEscaped": "bool",
        "Image": "str",
        "Volumes": "{struct{}}",
        "WorkingDir": "str",
        "Entrypoint": "strs",
        "NetworkDisabled": "bool",
        "OnBuild": "[str]",
        "Labels": "{str}",
        "StopSignal": "str",
        "StopTimeout": "int",
        "Shell": "strs",
        "HostConfig": "container.HostConfig",
        "NetworkingConfig": "network.NetworkingConfig",
        "MacAddress": "str",  # v28.5.2 v20.10.24
    },
    "container.DeviceMapping": {
        "PathOnHost": "str",
        "PathInContainer": "str",
        "CgroupPermissions": "str",
    },
    "container.DeviceRequest": {
        "Driver": "str",
        "Count": "int",
        "DeviceIDs": "[str]",
        "Capabilities": "[[str]]",
        "Options": "{str}",
    },
    "container.ExecCreateRequest": {
        "User": "str",
        "Privileged": "bool",
        "Tty": "bool",
        "ConsoleSize": "[int]",  # main v28.5.2
        "AttachStdin": "bool",
        "AttachStderr": "bool",
        "AttachStdout": "bool",
        "DetachKeys": "str",
        "Env": "[str]",
        "WorkingDir": "str",
        "Cmd": "[str]",
        "Detach": "bool",  # v28.5.2 v20.10.24
    },
    "container.ExecStartRequest": {
        "Detach": "bool",
        "Tty": "bool",
        "ConsoleSize": "[int]",  # main v28.5.2
    },
    "container.HostConfig": {
        "Binds": "[str]",
        "ContainerIDFile": "str",
        "LogConfig": "container.LogConfig",
        "NetworkMode": "str",
        "PortBindings": "{[network.PortBinding]}",
        "RestartPolicy": "container.RestartPolicy",
        "AutoRemove": "bool",
        "VolumeDriver": "str",
        "VolumesFrom": "[str]",
        "ConsoleSize": "[int]",
        "Annotations": "{str}",  # main v28.5.2
        "CapAdd": "strs",
        "CapDrop": "strs",
        "CgroupnsMode": "str",
        "Dns": "[str]",
        "DnsOptions": "[str]",
        "DnsSearch": "[str]",
        "ExtraHosts": "[str]",
        "GroupAdd": "[str]",
        "IpcMode": "str",
        "Cgroup": "str",
        "Links": "[str]",
        "OomScoreAdj": "int",
        "PidMode": "str",
        "Privileged": "bool",
        "PublishAllPorts": "bool",
        "ReadonlyRootfs": "bool",
        "SecurityOpt": "[str]",
        "StorageOpt": "{str}",
        "Tmpfs": "{str}",
        "UTSMode": "str",
        "UsernsMode": "str",
        "ShmSize": "int",
        "Sysctls": "{str}",
        "Runtime": "str",
        "Isolation": "str",
        "CpuShares": "int",
        "Memory": "int",
        "NanoCpus": "int",
        "CgroupParent": "str",
        "BlkioWeight": "int",
        "BlkioWeightDevice": "[blkiodev.WeightDevice]",
        "BlkioDeviceReadBps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceWriteBps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceReadIOps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceWriteIOps": "[blkiodev.ThrottleDevice]",
        "CpuPeriod": "int",
        "CpuQuota": "int",
        "CpuRealtimePeriod": "int",
        "CpuRealtimeRuntime": "int",
        "CpusetCpus": "str",
        "CpusetMems": "str",
        "Devices": "[container.DeviceMapping]",
        "DeviceCgroupRules": "[str]",
        "DeviceRequests": "[container.DeviceRequest]",
        "MemoryReservation": "int",
        "MemorySwap": "int",
        "MemorySwappiness": "int",
        "OomKillDisable": "bool",
        "PidsLimit": "int",
        "Ulimits": "[units.Ulimit]",
        "CpuCount": "int",
        "CpuPercent": "int",
        "IOMaximumIOps": "int",
        "IOMaximumBandwidth": "int",
        "Mounts": "[mount.Mount]",
        "MaskedPaths": "[str]",
        "ReadonlyPaths": "[str]",
        "Init": "bool",
        "KernelMemory": "int",  # v28.5.2 v20.10.24
        "KernelMemoryTCP": "int",  # v28.5.2 v20.10.24
    },
    "container.LogConfig": {
        "Type": "str",
        "Config": "{str}",
    },
    "container.RestartPolicy": {
        "Name": "str",
        "MaximumRetryCount": "int",
    },
    "container.UpdateConfig": {
        "CpuShares": "int",
        "Memory": "int",
        "NanoCpus": "int",
        "CgroupParent": "str",
        "BlkioWeight": "int",
        "BlkioWeightDevice": "[blkiodev.WeightDevice]",
        "BlkioDeviceReadBps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceWriteBps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceReadIOps": "[blkiodev.ThrottleDevice]",
        "BlkioDeviceWriteIOps": "[blkiodev.ThrottleDevice]",
        "CpuPeriod": "int",
        "CpuQuota": "int",
        "CpuRealtimePeriod": "int",
        "CpuRealtimeRuntime": "int",
        "CpusetCpus": "str",
        "CpusetMems": "str",
        "Devices": "[container.DeviceMapping]",
        "DeviceCgroupRules": "[str]",
        "DeviceRequests": "[container.DeviceRequest]",
        "MemoryReservation": "int",
        "MemorySwap": "int",
        "MemorySwappiness": "int",
        "OomKillDisable": "bool",
        "PidsLimit": "int",
        "Ulimits": "[units.Ulimit]",
        "CpuCount": "int",
        "CpuPercent": "int",
        "IOMaximumIOps": "int",
        "IOMaximumBandwidth": "int",
        "RestartPolicy": "container.RestartPolicy",
        "KernelMemory": "int",  # v28.5.2 v20.10.24
        "KernelMemoryTCP": "int",  # v28.5.2 v20.10.24
    },
    "mount.BindOptions": {
        "Propagation": "str",
        "NonRecursive": "bool",
        "CreateMountpoint": "bool",  # main v28.5.2
        "ReadOnlyNonRecursive": "bool",  # main v28.5.2
        "ReadOnlyForceRecursive": "bool",  # main v28.5.2
    },
    "mount.ClusterOptions": {},
    "mount.Driver": {
        "Name": "str",
        "Options": "{str}",
    },
    "mount.ImageOptions": {
        "Subpath": "str",  # main v28.5.2
    },
    "mount.Mount": {
        "Type": "str",
        "Source": "str",
        "Target": "str",
        "ReadOnly": "bool",
        "Consistency": "str",
        "BindOptions": "mount.BindOptions",
        "VolumeOptions": "mount.VolumeOptions",
        "ImageOptions": "mount.ImageOptions",  # main v28.5.2
        "TmpfsOptions": "mount.TmpfsOptions",
        "ClusterOptions": "mount.ClusterOptions",  # main v28.5.2
    },
    "mount.TmpfsOptions": {
        "SizeBytes": "int",
        "Mode": "int",
        "Options": "[[str]]",  # main v28.5.2
    },
    "mount.VolumeOptions": {
        "NoCopy": "bool",
        "Labels": "{str}",
        "Subpath": "str",  # main v28.5.2
        "DriverConfig": "mount.Driver",
    },
    "network.ConfigReference": {
        "Network": "str",
    },
    "network.CreateRequest": {
        "Name": "str",
        "Driver": "str",
        "Scope": "str",
        "EnableIPv4": "bool",  # main v28.5.2
        "EnableIPv6": "bool",
        "IPAM": "network.IPAM",
        "Internal": "bool",
        "Attachable": "bool",
        "Ingress": "bool",
        "ConfigOnly": "bool",
        "ConfigFrom": "network.ConfigReference",
        "Options": "{str}",
        "Labels": "{str}",
        "CheckDuplicate": "bool",  # v28.5.2 v20.10.24
    },
    "network.EndpointIPAMConfig": {
        "IPv4Address": "str",
        "IPv6Address": "str",
        "LinkLocalIPs": "[str]",
    },
    "network.EndpointSettings": {
        "IPAMConfig": "network.EndpointIPAMConfig",
        "Links": "[str]",
        "Aliases": "[str]",
        "DriverOpts": "{str}",
        "GwPriority": "int",  # main v28.5.2
        "NetworkID": "str",
        "EndpointID": "str",
        "Gateway": "str",
        "IPAddress": "str",
        "MacAddress": "str",
        "IPPrefixLen": "int",
        "IPv6Gateway": "str",
        "GlobalIPv6Address": "str",
        "GlobalIPv6PrefixLen": "int",
        "DNSNames": "[str]",  # main v28.5.2
    },
    "network.IPAM": {
        "Driver": "str",
        "Options": "{str}",
        "Config": "[network.IPAMConfig]",
    },
    "network.IPAMConfig": {
        "Subnet": "str",
        "IPRange": "str",
        "Gateway": "str",
        "AuxiliaryAddresses": "{str}",
    },
    "network.NetworkingConfig": {
        "EndpointsConfig": "{network.EndpointSettings}",
    },
    "network.PortBinding": {
        "HostIp": "str",
        "HostPort": "str",
    },
    "networkbackend.ConnectRequest": {
        "Container": "str",
        "EndpointConfig": "network.EndpointSettings",
    },
    "networkbackend.DisconnectRequest": {
        "Container": "str",
        "Force": "bool",
    },
    "plugin.Privilege": {
        "Name": "str",
        "Description": "str",
        "Value": "[str]",
    },
    "registry.AuthConfig": {
        "username": "str",
        "password": "str",
        "auth": "str",
        "serveraddress": "str",
        "identitytoken": "str",
        "registrytoken": "str",
        "email": "str",  # v28.5.2 v20.10.24
    },
    "swarm.AppArmorOpts": {
        "Mode": "str",  # main v28.5.2
    },
    "swarm.CAConfig": {
        "NodeCertExpiry": "int",
        "ExternalCAs": "[swarm.ExternalCA]",
        "SigningCACert": "str",
        "SigningCAKey": "str",
        "ForceRotate": "int",
    },
    "swarm.ConfigReference": {
        "File": "swarm.ConfigReferenceFileTarget",
        "Runtime": "swarm.ConfigReferenceRuntimeTarget",
        "ConfigID": "str",
        "ConfigName": "str",
    },
    "swarm.ConfigReferenceFileTarget": {
        "Name": "str",
        "UID": "str",
        "GID": "str",
        "Mode": "int",
    },
    "swarm.ConfigReferenceRuntimeTarget": {},
    "swarm.ConfigSpec": {
        "Name": "str",
        "Labels": "{str}",
        "Data": "bytes",
        "Templating": "swarm.Driver",
    },
    "swarm.ContainerSpec": {
        "Image": "str",
        "Labels": "{str}",
        "Command": "[str]",
        "Args": "[str]",
        "Hostname": "str",
        "Env": "[str]",
        "Dir": "str",
        "User": "str",
        "Groups": "[str]",
        "Privileges": "swarm.Privileges",
        "Init": "bool",
        "StopSignal": "str",
        "TTY": "bool",
        "OpenStdin": "bool",
        "ReadOnly": "bool",
        "Mounts": "[mount.Mount]",
        "StopGracePeriod": "int",
        "Healthcheck": "v1.HealthcheckConfig",
        "Hosts": "[str]",
        "DNSConfig": "swarm.DNSConfig",
        "Secrets": "[swarm.SecretReference]",
        "Configs": "[swarm.ConfigReference]",
        "Isolation": "str",
        "Sysctls": "{str}",
        "CapabilityAdd": "[str]",
        "CapabilityDrop": "[str]",
        "Ulimits": "[units.Ulimit]",
        "OomScoreAdj": "int",  # main v28.5.2
    },
    "swarm.CredentialSpec": {
        "Config": "str",
        "File": "str",
        "Registry": "str",
    },
    "swarm.DNSConfig": {
        "Nameservers": "[str]",
        "Search": "[str]",
        "Options": "[str]",
    },
    "swarm.DiscreteGenericResource": {
        "Kind": "str",
        "Value": "int",
    },
    "swarm.DispatcherConfig": {
        "HeartbeatPeriod": "int",
    },
    "swarm.Driver": {
        "Name": "str",
        "Options": "{str}",
    },
    "swarm.EncryptionConfig": {
        "AutoLockManagers": "bool",
    },
    "swarm.EndpointSpec": {
        "Mode": "str",
        "Ports": "[swarm.PortConfig]",
    },
    "swarm.ExternalCA": {
        "Protocol": "str",
        "URL": "str",
        "Options": "{str}",
        "CACert": "str",
    },
    "swarm.GenericResource": {
        "NamedResourceSpec": "swarm.NamedGenericResource",
        "DiscreteResourceSpec": "swarm.DiscreteGenericResource",
    },
    "swarm.GlobalJob": {},
    "swarm.GlobalService": {},
    "swarm.InitRequest": {
        "ListenAddr": "str",
        "AdvertiseAddr": "str",
        "DataPathAddr": "str",
        "DataPathPort": "int",
        "ForceNewCluster": "bool",
        "Spec": "swarm.Spec",
        "AutoLockManagers": "bool",
        "Availability": "str",
        "DefaultAddrPool": "[str]",
        "SubnetSize": "int",
    },
    "swarm.JoinRequest": {
        "ListenAddr": "str",
        "AdvertiseAddr": "str",
        "DataPathAddr": "str",
        "RemoteAddrs": "[str]",
        "JoinToken": "str",
        "Availability": "str",
    },
    "swarm.Limit": {
        "NanoCPUs": "int",
        "MemoryBytes": "int",
        "Pids": "int",
    },
    "swarm.NamedGenericResource": {
        "Kind": "str",
        "Value": "str",
    },
    "swarm.NetworkAttachmentConfig": {
        "Target": "str",
        "Aliases": "[str]",
        "DriverOpts": "{str}",
    },
    "swarm.NetworkAttachmentSpec": {
        "ContainerID": "str",
    },
    "swarm.NodeSpec": {
        "Name": "str",
        "Labels": "{str}",
        "Role": "str",
        "Availability": "str",
    },
    "swarm.OrchestrationConfig": {
        "TaskHistoryRetentionLimit": "int",
    },
    "swarm.Placement": {
        "Constraints": "[str]",
        "Preferences": "[swarm.PlacementPreference]",
        "MaxReplicas": "int",
        "Platforms": "[swarm.Platform]",
    },
    "swarm.PlacementPreference": {
        "Spread": "swarm.SpreadOver",
    },
    "swarm.Platform": {
        "Architecture": "str",
        "OS": "str",
    },
    "swarm.PortConfig": {
        "Name": "str",
        "Protocol": "str",
        "TargetPort": "int",
        "PublishedPort": "int",
        "PublishMode": "str",
    },
    "swarm.Privileges": {
        "CredentialSpec": "swarm.CredentialSpec",
        "SELinuxContext": "swarm.SELinuxContext",
        "Seccomp": "swarm.SeccompOpts",  # main v28.5.2
        "AppArmor": "swarm.AppArmorOpts",  # main v28.5.2
        "NoNewPrivileges": "bool",  # main v28.5.2
    },
    "swarm.RaftConfig": {
        "SnapshotInterval": "int",
        "KeepOldSnapshots": "int",
        "LogEntriesForSlowFollowers": "int",
        "ElectionTick": "int",
        "HeartbeatTick": "int",
    },
    "swarm.ReplicatedJob": {
        "MaxConcurrent": "int",
        "TotalCompletions": "int",
    },
    "swarm.ReplicatedService": {
        "Replicas": "int",
    },
    "swarm.ResourceRequirements": {
        "Limits": "swarm.Limit",
        "Reservations": "swarm.Resources",
        "SwapBytes": "int",  # main
        "MemorySwappiness": "int",  # main
    },
    "swarm.Resources": {
        "NanoCPUs": "int",
        "MemoryBytes": "int",
        "GenericResources": "[swarm.GenericResource]",
    },
    "swarm.RestartPolicy": {
        "Condition": "str",
        "Delay": "int",
        "MaxAttempts": "int",
        "Window": "int",
    },
    "swarm.RuntimePrivilege": {
        "name": "str",
        "description": "str",
        "value": "[str]",
    },
    "swarm.RuntimeSpec": {
        "name": "str",
        "remote": "str",
        "privileges": "[swarm.RuntimePrivilege]",
        "disabled": "bool",
        "env": "[str]",
    },
    "swarm.SELinuxContext": {
        "Disable": "bool",
        "User": "str",
        "Role": "str",
        "Type": "str",
        "Level": "str",
    },
    "swarm.SeccompOpts": {
        "Mode": "str",  # main v28.5.2
        "Profile": "bytes",  # main v28.5.2
    },
    "swarm.SecretReference": {
        "File": "swarm.SecretReferenceFileTarget",
        "SecretID": "str",
        "SecretName": "str",
    },
    "swarm.SecretReferenceFileTarget": {
        "Name": "str",
        "UID": "str",
        "GID": "str",
        "Mode": "int",
    },
    "swarm.SecretSpec": {
        "Name": "str",
        "Labels": "{str}",
        "Data": "bytes",
        "Driver": "swarm.Driver",
        "Templating": "swarm.Driver",
    },
    "swarm.ServiceMode": {
        "Replicated": "swarm.ReplicatedService",
        "Global": "swarm.GlobalService",
        "ReplicatedJob": "swarm.ReplicatedJob",
        "GlobalJob": "swarm.GlobalJob",
    },
    "swarm.Spec": {
        "Name": "str",
        "Labels": "{str}",
        "Orchestration": "swarm.OrchestrationConfig",
        "Raft": "swarm.RaftConfig",
        "Dispatcher": "swarm.DispatcherConfig",
        "CAConfig": "swarm.CAConfig",
        "TaskDefaults": "swarm.TaskDefaults",
        "EncryptionConfig": "swarm.EncryptionConfig",
    },
    "swarm.SpreadOver": {
        "SpreadDescriptor": "str",
    },
    "swarm.TaskDefaults": {
        "LogDriver": "swarm.Driver",
    },
    "swarm.TaskSpec": {
        "ContainerSpec": "swarm.ContainerSpec",
        "PluginSpec": "swarm.RuntimeSpec",
        "NetworkAttachmentSpec": "swarm.NetworkAttachmentSpec",
        "Resources": "swarm.ResourceRequirements",
        "RestartPolicy": "swarm.RestartPolicy",
        "Placement": "swarm.Placement",
        "Networks": "[swarm.NetworkAttachmentConfig]",
        "LogDriver": "swarm.Driver",
        "ForceUpdate": "int",
        "Runtime": "str",
    },
    "swarm.UnlockRequest": {
        "UnlockKey": "str",
    },
    "swarm.UpdateConfig": {
        "Parallelism": "int",
        "Delay": "int",
        "FailureAction": "str",
        "Monitor": "int",
        "MaxFailureRatio": "num",
        "Order": "str",
    },
    "swarm.serviceWithLegacy": {
        "Name": "str",
        "Labels": "{str}",
        "TaskTemplate": "swarm.TaskSpec",
        "Mode": "swarm.ServiceMode",
        "UpdateConfig": "swarm.UpdateConfig",
        "RollbackConfig": "swarm.UpdateConfig",
        "EndpointSpec": "swarm.EndpointSpec",
        "Networks": "[swarm.NetworkAttachmentConfig]",
    },
    "units.Ulimit": {
        "Name": "str",
        "Hard": "int",
        "Soft": "int",
    },
    "v1.HealthcheckConfig": {
        "Test": "[str]",
        "Interval": "int",
        "Timeout": "int",
        "StartPeriod": "int",
        "StartInterval": "int",  # main v28.5.2
        "Retries": "int",
    },
    "volume.AccessMode": {
        "Scope": "str",  # main v28.5.2
        "Sharing": "str",  # main v28.5.2
        "MountVolume": "volume.TypeMount",  # main v28.5.2
        "BlockVolume": "volume.TypeBlock",  # main v28.5.2
    },
    "volume.CapacityRange": {
        "RequiredBytes": "int",  # main v28.5.2
        "LimitBytes": "int",  # main v28.5.2
    },
    "volume.ClusterVolumeSpec": {
        "Group": "str",  # main v28.5.2
        "AccessMode": "volume.AccessMode",  # main v28.5.2
        "AccessibilityRequirements": "volume.TopologyRequirement",  # main v28.5.2
        "CapacityRange": "volume.CapacityRange",  # main v28.5.2
        "Secrets": "[volume.Secret]",  # main v28.5.2
        "Availability": "str",  # main v28.5.2
    },
    "volume.CreateRequest": {
        "ClusterVolumeSpec": "volume.ClusterVolumeSpec",  # main v28.5.2
        "Driver": "str",
        "DriverOpts": "{str}",
        "Labels": "{str}",
        "Name": "str",
    },
    "volume.Secret": {
        "Key": "str",  # main v28.5.2
        "Secret": "str",  # main v28.5.2
    },
    "volume.Topology": {
        "Segments": "{str}",  # main v28.5.2
    },
    "volume.TopologyRequirement": {
        "Requisite": "[volume.Topology]",  # main v28.5.2
        "Preferred": "[volume.Topology]",  # main v28.5.2
    },
    "volume.TypeBlock": {},
    "volume.TypeMount": {
        "FsType": "str",  # main v28.5.2
        "MountFlags": "[str]",  # main v28.5.2
    },
    "volumebackend.UpdateOptions": {
        "Spec": "volume.ClusterVolumeSpec",  # main v28.5.2
    },
}

ROOTS: dict[str, str] = {
    "config.create": "swarm.ConfigSpec",
    "config.update": "swarm.ConfigSpec",
    "container.create": "container.CreateRequest",
    "container.create.networking": "network.NetworkingConfig",
    "container.start": "container.HostConfig",
    "container.update": "container.UpdateConfig",
    "exec.create": "container.ExecCreateRequest",
    "exec.start": "container.ExecStartRequest",
    "image.commit": "container.Config",
    "network.connect": "networkbackend.ConnectRequest",
    "network.create": "network.CreateRequest",
    "network.disconnect": "networkbackend.DisconnectRequest",
    "node.update": "swarm.NodeSpec",
    "plugin.pull": "[plugin.Privilege]",
    "plugin.set": "[str]",
    "plugin.upgrade": "[plugin.Privilege]",
    "secret.create": "swarm.SecretSpec",
    "secret.update": "swarm.SecretSpec",
    "service.create": "swarm.serviceWithLegacy",
    "service.update": "swarm.serviceWithLegacy",
    "swarm.init": "swarm.InitRequest",
    "swarm.join": "swarm.JoinRequest",
    "swarm.unlock": "swarm.UnlockRequest",
    "swarm.update": "swarm.Spec",
    "system.auth": "registry.AuthConfig",
    "volume.create": "volume.CreateRequest",
    "volume.update": "volumebackend.UpdateOptions",
}
