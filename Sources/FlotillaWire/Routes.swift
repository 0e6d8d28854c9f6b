// Every route of the device and management APIs (openapi/device.yaml and management.yaml
// describe them; OpenAPITests checks that the router, this list and the files agree).

/// What agents call with their device token (`/api/v1/agent/…`).
public enum DeviceRoutes {
    public static let signingKey = Endpoint("GET", "/api/v1/agent/signing-key")
    public static let next = Endpoint("GET", "/api/v1/agent/next")
    public static let report = Endpoint("POST", "/api/v1/agent/executions/{id}/reports")
    public static let heartbeat = Endpoint("POST", "/api/v1/agent/heartbeat")
    public static let enroll = Endpoint("POST", "/api/v1/agent/enroll")
    public static let rotateToken = Endpoint("POST", "/api/v1/agent/token")
    public static let artifact = Endpoint("GET", "/api/v1/agent/artifacts/{sha256}")

    public static let all = [signingKey, next, report, heartbeat, enroll, rotateToken, artifact]
}

/// What operators, pipelines and the CLI call with an API token.
public enum ManagementRoutes {
    public static let createToken = Endpoint("POST", "/api/v1/tokens")
    public static let listTokens = Endpoint("GET", "/api/v1/tokens")
    public static let revokeToken = Endpoint("POST", "/api/v1/tokens/{id}/revoke")

    public static let createDevice = Endpoint("POST", "/api/v1/devices")
    public static let listDevices = Endpoint("GET", "/api/v1/devices")
    public static let device = Endpoint("GET", "/api/v1/devices/{device}")
    public static let updateDevice = Endpoint("PATCH", "/api/v1/devices/{device}")
    public static let deleteDevice = Endpoint("DELETE", "/api/v1/devices/{device}")
    public static let deviceGroups = Endpoint("GET", "/api/v1/devices/{device}/groups")
    public static let deviceExecutions = Endpoint("GET", "/api/v1/devices/{device}/executions")
    public static let acceptDevice = Endpoint("POST", "/api/v1/devices/{device}/accept")
    public static let rejectDevice = Endpoint("POST", "/api/v1/devices/{device}/reject")
    public static let revokeDeviceToken = Endpoint("POST", "/api/v1/devices/{device}/revoke-token")
    public static let rotateDeviceToken = Endpoint("POST", "/api/v1/devices/{device}/rotate-token")

    public static let createEnrollmentToken = Endpoint("POST", "/api/v1/enrollment-tokens")
    public static let listEnrollmentTokens = Endpoint("GET", "/api/v1/enrollment-tokens")
    public static let revokeEnrollmentToken = Endpoint("POST", "/api/v1/enrollment-tokens/{id}/revoke")

    public static let createGroup = Endpoint("POST", "/api/v1/groups")
    public static let listGroups = Endpoint("GET", "/api/v1/groups")
    public static let group = Endpoint("GET", "/api/v1/groups/{group}")
    public static let renameGroup = Endpoint("PATCH", "/api/v1/groups/{group}")
    public static let deleteGroup = Endpoint("DELETE", "/api/v1/groups/{group}")
    public static let groupDevices = Endpoint("GET", "/api/v1/groups/{group}/devices")
    public static let addGroupDevices = Endpoint("POST", "/api/v1/groups/{group}/devices")
    public static let removeGroupDevice = Endpoint("DELETE", "/api/v1/groups/{group}/devices/{device}")

    public static let applyFlow = Endpoint("POST", "/api/v1/flows")
    public static let validateFlow = Endpoint("POST", "/api/v1/flows/validate")
    public static let listFlows = Endpoint("GET", "/api/v1/flows")
    public static let flow = Endpoint("GET", "/api/v1/flows/{name}")
    public static let flowVersion = Endpoint("GET", "/api/v1/flows/{name}/versions/{version}")

    public static let createDeployment = Endpoint("POST", "/api/v1/deployments")
    public static let listDeployments = Endpoint("GET", "/api/v1/deployments")
    public static let deployment = Endpoint("GET", "/api/v1/deployments/{id}")
    public static let deploymentDevices = Endpoint("GET", "/api/v1/deployments/{id}/devices")
    public static let deploymentFailures = Endpoint("GET", "/api/v1/deployments/{id}/failures")
    public static let cancelDeployment = Endpoint("POST", "/api/v1/deployments/{id}/cancel")

    public static let uploadArtifact = Endpoint("POST", "/api/v1/artifacts")
    public static let listArtifacts = Endpoint("GET", "/api/v1/artifacts")
    public static let artifact = Endpoint("GET", "/api/v1/artifacts/{sha256}")
    public static let artifactContent = Endpoint("GET", "/api/v1/artifacts/{sha256}/content")
    public static let deleteArtifact = Endpoint("DELETE", "/api/v1/artifacts/{sha256}")

    public static let events = Endpoint("GET", "/api/v1/events")
    public static let audit = Endpoint("GET", "/api/v1/audit")

    public static let all = [
        createToken, listTokens, revokeToken,
        createDevice, listDevices, device, updateDevice, deleteDevice, deviceGroups, deviceExecutions, acceptDevice, rejectDevice,
        revokeDeviceToken, rotateDeviceToken,
        createEnrollmentToken, listEnrollmentTokens, revokeEnrollmentToken,
        createGroup, listGroups, group, renameGroup, deleteGroup, groupDevices, addGroupDevices, removeGroupDevice,
        applyFlow, validateFlow, listFlows, flow, flowVersion,
        createDeployment, listDeployments, deployment, deploymentDevices, deploymentFailures, cancelDeployment,
        uploadArtifact, listArtifacts, artifact, artifactContent, deleteArtifact,
        events, audit,
    ]
}
