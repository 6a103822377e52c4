/// How a group divides `count` units (heads, rows, cores) among its parts: contiguous ranges,
/// the first `count % parts` parts taking one more unit.
public enum EvenSplit {
    public static func part(_ part: Int, of count: Int, parts: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let start = part * base + min(part, extra)
        return start..<(start + base + (part < extra ? 1 : 0))
    }
}
