// The `error.code` of every error body the server sends ({"error":{"code","message","details"}}):
// what a client may branch on (the message is for people and may change). The HTTP layer's
// own codes (framing, limits, routing) are listed too: a client sees them the same way.
// ErrorCodeTests checks that every code the sources send is one of these.

public enum ErrorCode: String, Sendable, CaseIterable {
    case artifactInUse = "artifact_in_use"
    case artifactMissing = "artifact_missing"
    case badIdempotencyKey = "bad_idempotency_key"
    case badIfMatch = "bad_if_match"
    case badRequest = "bad_request"
    case bodyIncomplete = "body_incomplete"
    case bodyTooLarge = "body_too_large"
    case checksumMismatch = "checksum_mismatch"
    case clientCertificateMismatch = "client_certificate_mismatch"
    case clientCertificateRequired = "client_certificate_required"
    case conflict
    case contended
    case databaseUnavailable = "database_unavailable"
    case devicePending = "device_pending"
    case deviceRejected = "device_rejected"
    case enrollmentTokenExhausted = "enrollment_token_exhausted"
    case enrollmentTokenExpired = "enrollment_token_expired"
    case enrollmentTokenRevoked = "enrollment_token_revoked"
    case forbidden
    case headersTooLarge = "headers_too_large"
    case httpVersionNotSupported = "http_version_not_supported"
    case idempotencyKeyReused = "idempotency_key_reused"
    case `internal`
    case invalid
    case invalidToken = "invalid_token"
    case invalidTransition = "invalid_transition"
    case invalidValue = "invalid_value"
    case malformedJson = "malformed_json"
    case methodNotAllowed = "method_not_allowed"
    case missingBody = "missing_body"
    case notFound = "not_found"
    case notImplemented = "not_implemented"
    case nulCharacter = "nul_character"
    case outOfScope = "out_of_scope"
    case rangeNotSatisfiable = "range_not_satisfiable"
    case rateLimited = "rate_limited"
    case requestTimeout = "request_timeout"
    case tokenExpired = "token_expired"
    case tokenRevoked = "token_revoked"
    case unauthorized
    case unknownField = "unknown_field"
    case unknownParameter = "unknown_parameter"
    case uriTooLong = "uri_too_long"
    case versionMismatch = "version_mismatch"
}
