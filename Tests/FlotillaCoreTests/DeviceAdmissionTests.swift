// Every (admission state, event) pair of DeviceAdmission, with the expected outcome.

import FlotillaCore
import XCTest

final class DeviceAdmissionTests: XCTestCase {
    func testEveryStateAndEventPair() {
        let enrolled = AdmissionEvent.enrolled(needsApproval: false), enrolledForApproval = AdmissionEvent.enrolled(needsApproval: true)
        let expected: [AdmissionState: [AdmissionEvent: AdmissionState?]] = [
            // nil: refused, the state stays
            .preauthorized: [enrolled: .accepted, enrolledForApproval: .accepted, .accepted: nil, .rejected: nil],
            .pending: [enrolled: nil, enrolledForApproval: nil, .accepted: .accepted, .rejected: .rejected],
            .accepted: [enrolled: nil, enrolledForApproval: nil, .accepted: .accepted, .rejected: .rejected],
            .rejected: [enrolled: nil, enrolledForApproval: nil, .accepted: .accepted, .rejected: .rejected],
        ]
        for state in AdmissionState.allCases {
            for event in AdmissionEvent.allCases {
                var admission = DeviceAdmission(state)
                let outcome = admission.happened(event)
                let want = expected[state]![event]!
                switch outcome {
                case .moved(let to):
                    XCTAssertEqual(to, want, "\(state) + \(event)")
                    XCTAssertNotEqual(to, state, "\(state) + \(event): a move changes the state")
                case .unchanged:
                    XCTAssertEqual(want, state, "\(state) + \(event)")
                case .rejected(let reason):
                    XCTAssertNil(want, "\(state) + \(event)")
                    XCTAssertFalse(reason.isEmpty)
                }
                XCTAssertEqual(admission.state, want ?? state, "\(state) + \(event)")
            }
        }
        XCTAssertEqual(DeviceAdmission.firstEnrollment(needsApproval: true), .pending)
        XCTAssertEqual(DeviceAdmission.firstEnrollment(needsApproval: false), .accepted)
    }
}
