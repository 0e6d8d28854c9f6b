// The agent machine's input from the wire (a Manifest → AgentJob; reports go out as
// FlotillaWire's ReportBody), and the bytes a manifest key signs to vouch for its
// successor, shared by the server and the agent.

import FlotillaJSON

extension AgentJob {
    /// The job a manifest describes (Manifest has refused unknown step kinds already).
    public init(_ manifest: Manifest) {
        self.init(executionID: manifest.executionID, app: manifest.app, version: manifest.version,
                  steps: manifest.steps.map(\.kind), rollbackReboots: manifest.rollbackReboots)
    }
}

/// Manifest-key rotation: the server's current key signs these bytes to endorse the next
/// key (ManifestSigner); an agent checks that signature before adopting it (ManifestTrust).
public enum ManifestKeyEndorsement {
    public static func message(next publicKey: [UInt8]) -> [UInt8] {
        Array("flotilla next manifest key v1:".utf8) + publicKey
    }
}
