// Whether a device may use the device API: its admission state.
//
//                    enrolled (token needs no approval)
//   (none) ───────────────────────────────────────────────────────────▶ accepted
//      │ enrolled (token needs approval)                                  ▲   │
//      ▼                            accept                               │   │ reject
//   pending ──────────────────────────────────────────────────────────────┘   ▼
//      │ reject                                       accept               rejected
//      └──────────────────────────────────────────▶ rejected ───────────▶ accepted
//
//   preauthorized ── enrolled (any token) ──▶ accepted
//   (an operator named the device before it enrolled)
//
// Operator actions (accept, reject) are events; repeating one that already holds is a
// no-op (`.unchanged`), so a retried request is harmless. Only `accepted` devices may poll,
// report or download, and only they are targeted by deployments. A rejected device keeps
// its row and history; deleting it is a separate, explicit act.

public enum AdmissionState: String, Sendable, Equatable, CaseIterable {
    case preauthorized, pending, accepted, rejected
}

public enum AdmissionEvent: Sendable, Hashable, CaseIterable {
    /// The device presented an enrollment token; `needsApproval` is that token's setting.
    case enrolled(needsApproval: Bool)
    case accepted
    case rejected

    public static let allCases: [AdmissionEvent] = [.enrolled(needsApproval: false), .enrolled(needsApproval: true), .accepted, .rejected]
}

public enum AdmissionOutcome: Sendable, Equatable {
    case moved(to: AdmissionState)
    case unchanged
    case rejected(String)
}

public struct DeviceAdmission: Sendable, Equatable {
    public private(set) var state: AdmissionState

    public init(_ state: AdmissionState) { self.state = state }

    /// The state a device enrolling with no row of its own starts in.
    public static func firstEnrollment(needsApproval: Bool) -> AdmissionState {
        needsApproval ? .pending : .accepted
    }

    public mutating func happened(_ event: AdmissionEvent) -> AdmissionOutcome {
        let next: AdmissionState
        switch (state, event) {
        case (.preauthorized, .enrolled):
            next = .accepted
        case (.pending, .enrolled), (.accepted, .enrolled), (.rejected, .enrolled):
            return .rejected("a device named so is enrolled already")
        case (.preauthorized, .accepted), (.preauthorized, .rejected):
            return .rejected("the device has not enrolled yet; delete it to withdraw the pre-authorization")
        case (.pending, .accepted), (.rejected, .accepted):
            next = .accepted
        case (.pending, .rejected), (.accepted, .rejected):
            next = .rejected
        case (.accepted, .accepted), (.rejected, .rejected):
            return .unchanged
        }
        state = next
        return .moved(to: next)
    }
}
