// Long polls waiting for work, per device. A poll registers *before* it looks in the
// database, so a deployment created between its look and its wait still wakes it
// (the ticket remembers the wake-up). The waiters are this process's; a deployment made
// on another replica wakes them through the NOTIFY `work:<id>` every replica hears
// (APIContext's listener → ExecutionEngine.wakeTargets), and a change to an execution
// made here (a deadline, a cancel) wakes its device's poll directly (Action.wakeAgent).

import FlotillaWire
import Synchronization

final class DeviceWaiters: Sendable {
    struct Ticket: Sendable, Hashable {
        let device: String
        let number: Int
    }

    private enum Slot {
        case pending
        case woken
        case waiting(CheckedContinuation<Void, Never>)
    }

    private let state = Mutex<(next: Int, slots: [String: [Int: Slot]])>((0, [:]))

    func register(_ device: String) -> Ticket {
        state.withLock { state in
            state.next += 1
            state.slots[device, default: [:]][state.next] = .pending
            return Ticket(device: device, number: state.next)
        }
    }

    /// Returns when the device is woken (or was, since `register`) or after `seconds`.
    /// The timer is a child task canceled on wake-up, so woken polls leave nothing behind.
    func wait(_ ticket: Ticket, seconds: Int) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.state.withLock { state -> Bool in
                        guard case .pending? = state.slots[ticket.device]?[ticket.number] else { return true }
                        state.slots[ticket.device]?[ticket.number] = .waiting(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
            group.addTask {
                // Timed out (not canceled): resume the waiting child through `finish`.
                if (try? await Task.sleep(for: .seconds(seconds))) != nil { self.finish(ticket) }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Forgets the ticket (and resumes its poll if it still waits).
    func finish(_ ticket: Ticket) {
        let slot = state.withLock { state -> Slot? in
            let slot = state.slots[ticket.device]?.removeValue(forKey: ticket.number)
            if state.slots[ticket.device]?.isEmpty == true { state.slots[ticket.device] = nil }
            return slot
        }
        if case .waiting(let continuation)? = slot { continuation.resume() }
    }

    func wake(_ device: String) {
        let continuations = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard var slots = state.slots[device] else { return [] }
            var out: [CheckedContinuation<Void, Never>] = []
            for (number, slot) in slots {
                switch slot {
                case .pending: slots[number] = .woken
                case .woken: break
                case .waiting(let continuation):
                    out.append(continuation)
                    slots[number] = .woken
                }
            }
            state.slots[device] = slots
            return out
        }
        for continuation in continuations { continuation.resume() }
    }

    var waitingDevices: [String] { state.withLock { Array($0.slots.keys) } }

    /// A poll of `device` is parked in `wait` (registered, looked, found nothing): from here
    /// only a wake-up or its timeout answers it.
    func isParked(_ device: String) -> Bool {
        state.withLock { state in
            state.slots[device]?.values.contains { if case .waiting = $0 { true } else { false } } ?? false
        }
    }

    /// At shutdown: every poll answers now.
    func wakeAll() {
        for device in waitingDevices { wake(device) }
    }
}
