// Glob matching and what a scoped deployer token may deploy where.

import FlotillaCore
import XCTest

final class TokenScopeTests: XCTestCase {
    func testGlobs() {
        let cases: [(String, String, Bool)] = [
            ("site-*", "site-berlin", true), ("site-*", "site-", true), ("site-*", "depot", false), ("site-*", "xsite-a", false),
            ("*", "", true), ("", "", true), ("", "a", false), ("a?c", "abc", true), ("a?c", "ac", false),
            ("*-model", "hardhat-model", true), ("*-model", "hardhat-model-2", false), ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false), ("**", "anything", true), ("hardhat-model", "hardhat-model", true),
        ]
        for (pattern, text, expected) in cases {
            XCTAssertEqual(globMatches(pattern, text), expected, "\(pattern) vs \(text)")
        }
    }

    func testScope() {
        let scope = TokenScope(flows: ["hardhat-*"], groups: ["site-*"])
        XCTAssertNil(scope.refusal(flow: "hardhat-model", groups: ["site-berlin", "site-paris"], devices: [], selector: false))
        XCTAssertNotNil(scope.refusal(flow: "config-file", groups: ["site-berlin"], devices: [], selector: false))
        XCTAssertNotNil(scope.refusal(flow: "hardhat-model", groups: ["site-berlin", "depot"], devices: [], selector: false))
        XCTAssertNotNil(scope.refusal(flow: "hardhat-model", groups: [], devices: ["cam-1"], selector: false))
        XCTAssertNotNil(scope.refusal(flow: "hardhat-model", groups: [], devices: [], selector: true))
        let flowsOnly = TokenScope(flows: ["hardhat-*"], groups: nil)
        XCTAssertNil(flowsOnly.refusal(flow: "hardhat-model", groups: [], devices: ["cam-1"], selector: true))
        XCTAssertNil(TokenScope.unrestricted.refusal(flow: "x", groups: ["y"], devices: ["z"], selector: true))
        XCTAssertFalse(TokenScope.unrestricted.isRestricted)
        XCTAssertTrue(scope.isRestricted)
    }
}
