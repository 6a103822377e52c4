import Collectives
#if canImport(Glibc)
import Glibc
#endif

/// Ports the kernel has just handed out as free on 127.0.0.1.
public func freeLoopbackEndpoints(_ count: Int) -> [CollectiveEndpoint] {
    var sockets: [Int32] = []
    defer { sockets.forEach { close($0) } }
    return (0..<count).map { _ in
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        sockets.append(fd)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length)
                return getsockname(fd, pointer, &length)
            }
        }
        return CollectiveEndpoint(host: "127.0.0.1", port: Int(UInt16(bigEndian: address.sin_port)))
    }
}
