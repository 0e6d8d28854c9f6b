import FlotillaCore
import XCTest

/// Every (state, event) pair of a deployment's own machine.
final class DeploymentLifecyclePairsTests: XCTestCase {
    func testEveryStateAndEventPair() {
        let expected: [DeploymentState: (DeploymentDecision, DeploymentState)] = [
            .active: (.accepted([.logTransition(from: .active, to: .canceled, cause: "canceled by an operator")]), .canceled),
            .canceled: (.stale, .canceled),
        ]
        XCTAssertEqual(Set(expected.keys), Set(DeploymentState.allCases), "every state has a row")
        for state in DeploymentState.allCases {
            var machine = DeploymentLifecycle(state)
            let decision = machine.operatorCanceled()
            XCTAssertEqual(decision, expected[state]?.0, "\(state) + operatorCanceled")
            XCTAssertEqual(machine.state, expected[state]?.1, "\(state) + operatorCanceled")
        }
    }
}
