// Pinning the server's manifest key before the first poll (see ManifestTrust.swift): kept
// apart from the runner (AgentRunner.swift), which only consults `trust`.

import FlotillaJSON
import FlotillaTransport
import FlotillaWire
import Foundation

extension AgentDaemon {
    /// The pinned manifest key (ManifestTrust.swift); retried until the server can be asked.
    /// `offline`: only a configured or already pinned key, without the network — what resuming
    /// an execution at start needs, so that one finishing then is remembered as finished.
    func loadTrust(offline: Bool = false) async {
        while trust == nil {
            do {
                let (loaded, how) = try await ManifestTrust.load(root: files.root, configured: config.signingKey) {
                    if offline { throw CancellationError() }
                    let response = try await connection().send(ClientRequest(path: DeviceRoutes.signingKey.path()), timeout: .seconds(30))
                    guard response.status == 200, let text = try JSON.parse(response.body).objectValue?["public_key"]?.stringValue,
                          let key = Base64URL.decode(text), key.count == 32 else {
                        throw AgentError.io("\(DeviceRoutes.signingKey) answered \(response.status)")
                    }
                    return key
                }
                trust = loaded
                log(how)
            } catch where offline {
                return  // not pinned yet: the online call after the resume fetches it
            } catch let error as AgentError {
                log("cannot pin the manifest key: \(error)")
                await pause()
            } catch {
                log("cannot fetch the manifest key: \(error)")
                await dropConnection()
                await pause()
            }
        }
    }

    /// Every six hours (and at start), reads the server's signing-key document: a next key
    /// it announces, endorsed by the pinned key, is kept for the rotation (ManifestTrust.learn).
    func refreshTrust() async {
        guard trust != nil, Date().timeIntervalSince(trustRefreshedAt) > 6 * 3600 else { return }
        do {
            let response = try await connection().send(ClientRequest(path: DeviceRoutes.signingKey.path()), timeout: .seconds(30))
            guard response.status == 200 else { return }
            trustRefreshedAt = Date()
            if let message = try trust!.learn(try JSON.parse(response.body)) { log(message) }
        } catch {
            // Not urgent (the pinned key keeps working): try again in five minutes, not every poll.
            trustRefreshedAt = Date().addingTimeInterval(-6 * 3600 + 300)
            log("cannot read the server's signing key document: \(error)")
        }
    }
}
