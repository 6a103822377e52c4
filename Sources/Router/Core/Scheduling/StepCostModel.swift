/// How long the workers take for a step, learned from the steps they ran: seconds ≈ c0 +
/// c1·tokens + c2·attended, where `attended` counts, over every token computed, the positions it
/// attends to (in thousands). Fitted by exponentially weighted least squares, so it follows the
/// machine and the model without being told either; the scheduler uses it to keep steps with
/// prefill chunks near a time target, so a long prompt cannot hold a short one back for long.
struct StepCostModel: Sendable {
    /// Weight of the past after each new observation.
    var forgetting = 0.97
    /// Observations needed before predictions are made.
    var minimumObservations = 6

    private var normal = [Double](repeating: 0, count: 9)  // 3×3, row-major
    private var moment = [Double](repeating: 0, count: 3)
    private var observations = 0
    private var largestStepTokens = 0
    /// (c0, c1, c2) of the last fit, or nil before there is enough to fit.
    private(set) var coefficients: (Double, Double, Double)?

    /// The features of a chunk of `tokens` tokens starting at position `start`.
    static func attended(start: Int, tokens: Int) -> Double {
        Double(tokens) * (Double(start) + Double(tokens + 1) / 2) / 1000
    }

    mutating func observe(tokens: Int, attended: Double, seconds: Double) {
        guard tokens > 0, seconds.isFinite, seconds >= 0 else { return }
        let x = [1, Double(tokens), attended]
        for index in 0..<9 { normal[index] *= forgetting }
        for index in 0..<3 { moment[index] *= forgetting }
        for row in 0..<3 {
            for column in 0..<3 { normal[row * 3 + column] += x[row] * x[column] }
            moment[row] += x[row] * seconds
        }
        observations += 1
        largestStepTokens = max(largestStepTokens, tokens)
        coefficients = observations >= minimumObservations && largestStepTokens > 1 ? solve() : nil
    }

    /// Seconds a chunk of `tokens` starting at `start` adds to a step, or nil while unknown.
    func cost(start: Int, tokens: Int) -> Double? {
        guard let (_, perToken, perAttended) = coefficients else { return nil }
        return perToken * Double(tokens) + perAttended * Self.attended(start: start, tokens: tokens)
    }

    /// The fixed cost of a step, or nil while unknown.
    var stepOverhead: Double? { coefficients?.0 }

    /// The most tokens from `start` whose cost fits in `seconds` (at least 0), or nil while unknown.
    func tokens(fitting seconds: Double, start: Int) -> Int? {
        guard let (_, perToken, perAttended) = coefficients else { return nil }
        guard seconds > 0 else { return 0 }
        // perAttended/2000·n² + (perToken + perAttended·(start + 0.5)/1000)·n = seconds
        let a = perAttended / 2000
        let b = perToken + perAttended * (Double(start) + 0.5) / 1000
        let n: Double
        if a <= 0 {
            n = b > 0 ? seconds / b : Double(Int.max)
        } else {
            n = (-b + (b * b + 4 * a * seconds).squareRoot()) / (2 * a)
        }
        return n >= Double(Int32.max) ? Int(Int32.max) : max(0, Int(n))
    }

    /// Ridge-regularised solve of the normal equations; coefficients kept non-negative.
    private func solve() -> (Double, Double, Double)? {
        var m = normal
        var v = moment
        let scale = max(m[0], 1e-12)
        for index in 0..<3 { m[index * 4] += 1e-9 * scale }
        // Gaussian elimination with partial pivoting.
        for column in 0..<3 {
            var pivot = column
            for row in column + 1..<3 where abs(m[row * 3 + column]) > abs(m[pivot * 3 + column]) { pivot = row }
            guard abs(m[pivot * 3 + column]) > 1e-300 else { return nil }
            if pivot != column {
                for k in 0..<3 { m.swapAt(column * 3 + k, pivot * 3 + k) }
                v.swapAt(column, pivot)
            }
            for row in column + 1..<3 {
                let factor = m[row * 3 + column] / m[column * 3 + column]
                for k in column..<3 { m[row * 3 + k] -= factor * m[column * 3 + k] }
                v[row] -= factor * v[column]
            }
        }
        var x = [Double](repeating: 0, count: 3)
        for row in stride(from: 2, through: 0, by: -1) {
            var sum = v[row]
            for k in row + 1..<3 { sum -= m[row * 3 + k] * x[k] }
            x[row] = sum / m[row * 3 + row]
        }
        guard x.allSatisfy(\.isFinite) else { return nil }
        return (max(0, x[0]), max(0, x[1]), max(0, x[2]))
    }
}
