// A point in time with microsecond precision: what `timestamptz` stores. It prints as
// RFC 3339 in UTC ("2026-11-21T16:04:05.123456Z") and parses both RFC 3339 (API input)
// and PostgreSQL's ISO output ("2026-11-21 16:04:05.123456+00").
//
// Our own small type, not Foundation's Date: Date is a Double of seconds and loses the
// exact microseconds a keyset cursor must round-trip.

public struct Timestamp: Sendable, Hashable, Comparable, PGEncodable, PGDecodable, CustomStringConvertible {
    public var microseconds: Int64

    public init(microsecondsSinceEpoch: Int64) { microseconds = microsecondsSinceEpoch }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.microseconds < b.microseconds }

    public var pgText: String { rfc3339 }
    public var description: String { rfc3339 }

    public static func decode(pgText text: String?, column: String) throws -> Timestamp {
        let text = try require(text, column)
        guard let value = Timestamp(parsing: text) else {
            throw PGError.decoding(column: column, message: "not a timestamp: \(text)")
        }
        return value
    }

    /// "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" (six digits only when there is a fraction).
    public var rfc3339: String {
        let (days, micros) = microseconds.quotientAndRemainderFloor(86_400_000_000)
        let (year, month, day) = civil(fromDays: days)
        let seconds = micros / 1_000_000, fraction = micros % 1_000_000
        var out = pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2)
        out += "T" + pad(seconds / 3600, 2) + ":" + pad(seconds / 60 % 60, 2) + ":" + pad(seconds % 60, 2)
        if fraction != 0 { out += "." + pad(fraction, 6) }
        return out + "Z"
    }

    /// Parses RFC 3339 or PostgreSQL ISO output; nil when it is neither.
    public init?(parsing text: String) {
        let b = Array(text.utf8)
        func number(_ at: Int, _ count: Int) -> Int64? {
            guard at + count <= b.count else { return nil }
            var value: Int64 = 0
            for i in at..<at + count {
                guard b[i] >= 48 && b[i] <= 57 else { return nil }
                value = value * 10 + Int64(b[i] - 48)
            }
            return value
        }
        guard b.count >= 19, let year = number(0, 4), b[4] == 45, let month = number(5, 2), b[7] == 45,
              let day = number(8, 2), b[10] == 84 || b[10] == 116 || b[10] == 32,
              let hour = number(11, 2), b[13] == 58, let minute = number(14, 2), b[16] == 58,
              let second = number(17, 2),
              (1...12).contains(month), (1...Timestamp.daysIn(year, month)).contains(day),
              hour < 24, minute < 60, second < 60 else { return nil }
        var index = 19
        var micros: Int64 = 0
        if index < b.count && b[index] == 46 {
            index += 1
            var digits = 0
            while index < b.count, b[index] >= 48 && b[index] <= 57 {
                if digits < 6 { micros = micros * 10 + Int64(b[index] - 48) }
                digits += 1
                index += 1
            }
            guard digits > 0 else { return nil }
            if digits < 6 { for _ in digits..<6 { micros *= 10 } }
        }
        // The zone: Z, or ±HH, ±HH:MM, ±HHMM.
        var offsetSeconds: Int64 = 0
        guard index < b.count else { return nil }
        if b[index] == 90 || b[index] == 122 {
            index += 1
        } else if b[index] == 43 || b[index] == 45 {
            let sign: Int64 = b[index] == 45 ? -1 : 1
            guard let hours = number(index + 1, 2), hours < 24 else { return nil }
            index += 3
            var minutes: Int64 = 0
            if index < b.count {
                if b[index] == 58 { index += 1 }
                guard let m = number(index, 2), m < 60 else { return nil }
                minutes = m
                index += 2
            }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
        } else {
            return nil
        }
        guard index == b.count else { return nil }
        let days = Timestamp.days(fromCivil: year, month, day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        // Years 0001 to 9999 in UTC only: what RFC 3339 and our four-digit output can spell
        // (year 0 reached PostgreSQL as "0000", which it refuses, and came back as a 500).
        guard Timestamp.representable.contains(seconds) else { return nil }
        microseconds = seconds * 1_000_000 + micros
    }

    /// 0001-01-01T00:00:00Z ... 9999-12-31T23:59:59Z, in seconds since 1970.
    static let representable = days(fromCivil: 1, 1, 1) * 86_400 ... days(fromCivil: 9999, 12, 31) * 86_400 + 86_399

    // Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (month <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, month, day)
    }

    static func daysIn(_ year: Int64, _ month: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

extension Int64 {
    /// Division rounding toward negative infinity, so times before 1970 format correctly.
    func quotientAndRemainderFloor(_ divisor: Int64) -> (Int64, Int64) {
        var (q, r) = quotientAndRemainder(dividingBy: divisor)
        if r < 0 { q -= 1; r += divisor }
        return (q, r)
    }
}
